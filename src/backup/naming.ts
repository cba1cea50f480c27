/**
 * Object names, after the seed guide's script, in UTC:
 *   <prefix><database>/<database>_<YYYYMMDD_HHMMSS>.sql.gz   (plain)
 *   <prefix><database>/<database>_<YYYYMMDD_HHMMSS>.dump.gz  (custom)
 * beside them <data key>.manifest.json (written last: its presence makes the backup good) and
 * <data key>.verify.json (the last restore drill of that backup).
 */

export type BackupFormat = 'plain' | 'custom';

export const MANIFEST_SUFFIX = '.manifest.json';
export const VERIFY_SUFFIX = '.verify.json';
const DATA_RE = /^(?<db>[^/]+)\/\k<db>_(?<ts>\d{8}_\d{6})(?<n>-\d+)?\.(?<ext>sql|dump)\.gz$/;

export function stamp(d: Date): string {
  const iso = d.toISOString(); // 2026-11-24T20:08:57.903Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
}

export function dataKey(database: string, at: Date, format: BackupFormat, seq = 0): string {
  const ext = format === 'custom' ? 'dump' : 'sql';
  return `${database}/${database}_${stamp(at)}${seq ? `-${seq}` : ''}.${ext}.gz`;
}

export function databasePrefix(database: string): string {
  return `${database}/`;
}

export interface ParsedKey {
  database: string;
  at: Date;
  format: BackupFormat;
}

/** Parses a data key (relative to the storage root); undefined for anything else. */
export function parseDataKey(key: string): ParsedKey | undefined {
  const m = DATA_RE.exec(key);
  if (!m?.groups) return undefined;
  const ts = m.groups.ts!;
  const at = new Date(
    `${ts.slice(0, 4)}-${ts.slice(4, 6)}-${ts.slice(6, 8)}T${ts.slice(9, 11)}:${ts.slice(11, 13)}:${ts.slice(13, 15)}Z`,
  );
  return { database: m.groups.db!, at, format: m.groups.ext === 'dump' ? 'custom' : 'plain' };
}
