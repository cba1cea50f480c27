/**
 * Object names, after the seed guide's script, in UTC:
 *   <prefix><db>/<db>_<YYYYMMDD_HHMMSS>-<run>.sql.gz   (plain)
 *   <prefix><db>/<db>_<YYYYMMDD_HHMMSS>-<run>.dump.gz  (custom)
 * and, encrypted to age recipients after compression, the same with `.age` after: `.sql.gz.age`;
 * beside them <data key>.manifest.json (written last: its presence makes the backup good) and
 * <data key>.verify-<YYYYMMDD_HHMMSS>-<run>.json, one per restore drill of that backup (the newest
 * that can be trusted counts; nothing is ever rewritten, so a store may lock every object). Earlier
 * releases rewrote one <data key>.verify.json: it is still read, as the oldest record.
 *
 * <db> is the database name percent-encoded: every byte outside A-Z a-z 0-9 _ - becomes %XX. Any name
 * PostgreSQL allows thus stays one path segment, decodes back exactly, and can never reach into
 * another database's folder or look like a temporary file. <run> is random, so two runs in the same
 * second never share a key. Keys written before (the raw name where it had no "/", an optional -N
 * instead of <run>) stay readable: the manifest inside names the database, and decides.
 */

export type BackupFormat = 'plain' | 'custom';

export const MANIFEST_SUFFIX = '.manifest.json';
/** The one drill record earlier releases rewrote; still read and deleted. */
export const VERIFY_SUFFIX = '.verify.json';
const VERIFY_RE = /\.verify(?:-(\d{8}_\d{6})-[0-9a-z]{1,16})?\.json$/;
const DATA_RE =
  /^(?<dir>[^/]+)\/\k<dir>_(?<ts>\d{8}_\d{6})(?:-[0-9a-z]{1,16})?\.(?<ext>sql|dump)\.gz(?<age>\.age)?$/;
const SAFE_BYTE = /^[A-Za-z0-9_-]$/;
const ENCODED_RE = /^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$/;
/** NAMEDATALEN - 1: PostgreSQL truncates longer names. */
const MAX_NAME_BYTES = 63;

export function stamp(d: Date): string {
  const iso = d.toISOString(); // 2026-11-24T20:08:57.903Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
}

/** Why PostgreSQL could not have a database of this name, or undefined when it could. */
export function databaseNameProblem(name: string): string | undefined {
  if (name === '') return 'a database name cannot be empty';
  if (name.includes('\0')) return 'a database name cannot hold a NUL character';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_BYTES)
    return `a database name has at most ${MAX_NAME_BYTES} bytes (this one has ${bytes})`;
  return undefined;
}

export function encodeName(name: string): string {
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += SAFE_BYTE.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The name a canonical encoding stands for; undefined for anything encodeName would not write. */
export function decodeName(segment: string): string | undefined {
  if (!ENCODED_RE.test(segment)) return undefined;
  const bytes = Buffer.from(
    segment.replace(/%([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  );
  let name: string;
  try {
    name = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  return encodeName(name) === segment && !databaseNameProblem(name) ? name : undefined;
}

/** The folder (first key segment) a database's backups are written to. */
export function databaseFolder(database: string): string {
  return encodeName(database);
}

/**
 * Every folder a database's backups may be in: the encoded one, and the raw name that earlier
 * versions wrote, where that was a usable single segment.
 */
export function databaseFolders(database: string): string[] {
  const folders = [databaseFolder(database)];
  if (legacyFolder(database) && !folders.includes(database)) folders.push(database);
  return folders;
}

/** Whether a raw name was a folder earlier releases could write (one plain path segment). */
function legacyFolder(name: string): boolean {
  // eslint-disable-next-line no-control-regex
  return !/[/\\\x00-\x1f\x7f]/.test(name) && name !== '.' && name !== '..';
}

export function dataKey(
  database: string,
  at: Date,
  format: BackupFormat,
  run: string,
  encrypted = false,
): string {
  const ext = format === 'custom' ? 'dump' : 'sql';
  const folder = databaseFolder(database);
  return `${folder}/${folder}_${stamp(at)}-${run}.${ext}.gz${encrypted ? '.age' : ''}`;
}

/** The key of one drill's record of the backup under `data`: a new key for every drill. */
export function verifyKey(data: string, at: Date, run: string): string {
  return `${data}.verify-${stamp(at)}-${run}.json`;
}

/** Whether a key is a drill record (either form). */
export function isVerifyKey(key: string): boolean {
  return VERIFY_RE.test(key);
}

/**
 * The second a drill record's name carries ('' for the old single record). Two drills within one
 * second share it, and their run ids order them at random, so readers compare their contents.
 */
export function verifyStampOf(data: string, key: string): string | undefined {
  if (!key.startsWith(`${data}.verify`)) return undefined;
  const m = VERIFY_RE.exec(key.slice(data.length));
  return m && m.index === 0 ? (m[1] ?? '') : undefined;
}

/** The drill records of the backup under `data` among `keys`, newest first by their names. */
export function verifyKeysOf(data: string, keys: Iterable<string>): string[] {
  const out: Array<{ key: string; order: string }> = [];
  for (const key of keys) {
    const order = verifyStampOf(data, key);
    if (order === undefined) continue;
    out.push({ key, order }); // the old single record ('') sorts as the oldest
  }
  out.sort((a, b) => (a.order < b.order ? 1 : a.order > b.order ? -1 : a.key < b.key ? 1 : -1));
  return out.map((o) => o.key);
}

export interface ParsedKey {
  /** The databases this key may belong to: its decoded folder, and the folder as an older raw name. */
  databases: string[];
  at: Date;
  format: BackupFormat;
  /** The key ends in `.age`: the object is age-encrypted (the manifest must say so too). */
  encrypted: boolean;
}

/** Parses a data key (relative to the storage root); undefined for anything else. */
export function parseDataKey(key: string): ParsedKey | undefined {
  const m = DATA_RE.exec(key);
  if (!m?.groups) return undefined;
  const dir = m.groups.dir!;
  const ts = m.groups.ts!;
  const at = new Date(
    `${ts.slice(0, 4)}-${ts.slice(4, 6)}-${ts.slice(6, 8)}T${ts.slice(9, 11)}:${ts.slice(11, 13)}:${ts.slice(13, 15)}Z`,
  );
  if (Number.isNaN(at.getTime()) || stamp(at) !== ts) return undefined;
  const databases: string[] = [];
  const decoded = decodeName(dir);
  if (decoded !== undefined) databases.push(decoded);
  if (dir !== decoded && legacyFolder(dir) && !databaseNameProblem(dir)) databases.push(dir);
  if (databases.length === 0) return undefined;
  return {
    databases,
    at,
    format: m.groups.ext === 'dump' ? 'custom' : 'plain',
    encrypted: m.groups.age !== undefined,
  };
}

/**
 * A name or key made safe to print on a terminal or in a table: control characters (a newline could
 * forge a line of `backups list`) shown as escapes.
 */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
