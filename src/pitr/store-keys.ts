/**
 * Where point-in-time recovery lives in the store, under the database cluster's own prefix (its
 * system identifier, so two clusters sharing a bucket never mix their WAL):
 *   pitr/<sysid>/wal/<segment>-<tag>.gz                       a finished WAL segment
 *   pitr/<sysid>/wal/<segment>.partial.<bytes>-<tag>.gz       the segment being written, so far
 *   pitr/<sysid>/wal/<TTTTTTTT>.history-<tag>.gz              a timeline's history file
 *   pitr/<sysid>/base/<YYYYMMDD_HHMMSS>-<run>.tar.gz          a base backup (pg_basebackup's tar, gzip)
 *   pitr/<sysid>/base/<...>.tar.gz.manifest.json              its manifest, written last
 *   pitr/<sysid>/drills/<YYYYMMDD_HHMMSS>-<run>.json          a PITR drill's record
 * With BACKUP_ENCRYPTION_RECIPIENTS, segments and partials are stored encrypted with age after gzip:
 *   pitr/<sysid>/wal/<segment>-<tag>-<stored>.gz.age            (partials alike)
 *   pitr/<sysid>/wal/<TTTTTTTT>.history-<tag>-<PPPPPPPP>-<LSN>-<stored>.gz.age
 *   pitr/<sysid>/base/<YYYYMMDD_HHMMSS>-<run>.tar.gz.age       (its manifest: <...>.tar.gz.age.manifest.json)
 * An encrypted history file's name carries the switch PostgreSQL appended to its parent's history:
 * the parent timeline <PPPPPPPP> and the switch position <LSN> (16 hex digits). PostgreSQL writes a
 * new timeline's history as its parent's followed by that line, so whoever holds no identity
 * (retention, `pitr list` and `verify`, the store metrics) follows the timelines from the names,
 * as segment names already tell timelines and positions; the reason of each switch (which may
 * quote a restore point's name or a target time) stays encrypted.
 * where <stored> binds the stored (encrypted) bytes to the name and <tag> (wal-object.ts) the
 * plaintext; plain and encrypted objects sit side by side after encryption is turned on or off.
 * <tag> is 64 hex digits binding the uncompressed content to its name (its SHA-256, or with
 * BACKUP_SIGNING_KEY_FILE an HMAC of the system identifier, the name (a partial's with its <bytes>)
 * and the SHA-256, so an object copied from another cluster or under another byte count is refused): every object is written once and never
 * replaced, a partial never takes a finished segment's name, and a different segment under a
 * stored name is seen. <bytes> (8 hex digits) is how much of a partial segment holds WAL, so the
 * newest partial is the largest, whatever any clock says.
 * Dumps live in one folder per database (naming.ts); keys here are deeper than one level, which the
 * dump catalog never reads, so a database that happens to be named "pitr" sees none of them.
 */
import { AGE_SUFFIX } from '../backup/encryption.js';
import { stamp } from '../backup/naming.js';
import { parseWalFileName, type TimelineSwitch, type WalFileName } from './wal-name.js';

export const PITR_ROOT = 'pitr';
export const BASE_MANIFEST_SUFFIX = '.manifest.json';
const SYSID_RE = /^\d{1,20}$/;
const TAG = '[0-9a-f]{64}';
/** `.gz`, or `-<stored tag>.gz.age` for an encrypted object. */
const END = `(?:\\.gz|-(${TAG})\\.gz\\.age)`;
const WAL_RE = new RegExp(`^([0-9A-F]{24})-(${TAG})${END}$`);
const PARTIAL_RE = new RegExp(`^([0-9A-F]{24})\\.partial\\.([0-9a-f]{8})-(${TAG})${END}$`);
const HISTORY_RE = new RegExp(
  `^([0-9A-F]{8}\\.history)-(${TAG})(?:\\.gz|-([0-9A-F]{8})-([0-9A-F]{16})-(${TAG})\\.gz\\.age)$`,
);
const BASE_RE = /^(\d{8}_\d{6})-([0-9a-f]{8})\.tar\.gz(\.age)?$/;
const DRILL_RE = /^(\d{8}_\d{6})-([0-9a-f]{8})\.json$/;

export function validSystemIdentifier(sysid: string): boolean {
  return SYSID_RE.test(sysid);
}

function root(sysid: string): string {
  if (!validSystemIdentifier(sysid)) throw new Error(`not a system identifier: ${JSON.stringify(sysid)}`);
  return `${PITR_ROOT}/${sysid}`;
}

export const walPrefix = (sysid: string) => `${root(sysid)}/wal/`;
export const basePrefix = (sysid: string) => `${root(sysid)}/base/`;
export const drillPrefix = (sysid: string) => `${root(sysid)}/drills/`;

/** The switch that began a timeline: the last line of its history file. */
export type Lineage = TimelineSwitch;

/** How an encrypted history file's name carries its lineage: `<PPPPPPPP>-<LSN>`. */
export function lineageText(l: Lineage): string {
  return `${l.parent.toString(16).toUpperCase().padStart(8, '0')}-${l.switchLsn.toString(16).toUpperCase().padStart(16, '0')}`;
}

/**
 * The key of a WAL file (or a partial's name) with plaintext tag `tag`; `storedTag` when encrypted,
 * and then for a history file its `lineage`.
 */
export function walKey(
  sysid: string,
  fileName: string,
  tag: string,
  storedTag?: string,
  lineage?: Lineage,
): string {
  const mid = lineage ? `-${lineageText(lineage)}` : '';
  return `${walPrefix(sysid)}${fileName}-${tag}${storedTag ? `${mid}-${storedTag}.gz${AGE_SUFFIX}` : '.gz'}`;
}

/** A partial's name as its tag binds it: the segment and how many bytes of it hold WAL. */
export function partialName(segment: string, validBytes: number): string {
  return `${segment}.partial.${validBytes.toString(16).padStart(8, '0')}`;
}

export function partialKey(
  sysid: string,
  segment: string,
  validBytes: number,
  tag: string,
  storedTag?: string,
): string {
  return walKey(sysid, partialName(segment, validBytes), tag, storedTag);
}

export function baseKey(sysid: string, at: Date, run: string, encrypted = false): string {
  return `${basePrefix(sysid)}${stamp(at)}-${run}.tar.gz${encrypted ? AGE_SUFFIX : ''}`;
}

export function drillKey(sysid: string, at: Date, run: string): string {
  return `${drillPrefix(sysid)}${stamp(at)}-${run}.json`;
}

export type StoredWal = {
  key: string;
  /** Binds the uncompressed, unencrypted content to the name. */
  tag: string;
  /** Encrypted objects only: binds the stored bytes to the name and `tag`, checked without the identity. */
  storedTag?: string | undefined;
  /** The file's name as PostgreSQL knows it (the segment's for a partial). */
  file: WalFileName;
  /** An encrypted history file: the switch its name says began its timeline. */
  lineage?: Lineage | undefined;
} & ({ partial: false } | { partial: true; validBytes: number });

/** A key under walPrefix(sysid), parsed; undefined for anything pg-maintd would not have written there. */
export function parseWalKey(sysid: string, key: string, segmentBytes?: number): StoredWal | undefined {
  const prefix = walPrefix(sysid);
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  let m = WAL_RE.exec(rest);
  if (m) {
    const file = parseWalFileName(m[1]!, segmentBytes);
    return file?.kind === 'segment' ? { key, tag: m[2]!, storedTag: m[3], file, partial: false } : undefined;
  }
  m = PARTIAL_RE.exec(rest);
  if (m) {
    const file = parseWalFileName(m[1]!, segmentBytes);
    const validBytes = parseInt(m[2]!, 16);
    return file?.kind === 'segment'
      ? { key, tag: m[3]!, storedTag: m[4], file, partial: true, validBytes }
      : undefined;
  }
  m = HISTORY_RE.exec(rest);
  if (m) {
    const file = parseWalFileName(m[1]!);
    if (file?.kind !== 'history') return undefined;
    if (m[3] === undefined) return { key, tag: m[2]!, file, partial: false };
    const lineage = { parent: parseInt(m[3], 16), switchLsn: BigInt(`0x${m[4]!}`) };
    // a timeline branches from an older one, never from itself or a newer one
    if (lineage.parent < 1 || lineage.parent >= file.timeline) return undefined;
    return { key, tag: m[2]!, storedTag: m[5], lineage, file, partial: false };
  }
  return undefined;
}

/** When a base backup or drill key says it was written (UTC, to the second), or undefined. */
function stampDate(ts: string): Date | undefined {
  const at = new Date(
    `${ts.slice(0, 4)}-${ts.slice(4, 6)}-${ts.slice(6, 8)}T${ts.slice(9, 11)}:${ts.slice(11, 13)}:${ts.slice(13, 15)}Z`,
  );
  return Number.isNaN(at.getTime()) || stamp(at) !== ts ? undefined : at;
}

export function parseBaseKey(
  sysid: string,
  key: string,
): { key: string; at: Date; run: string; encrypted: boolean } | undefined {
  const prefix = basePrefix(sysid);
  if (!key.startsWith(prefix)) return undefined;
  const m = BASE_RE.exec(key.slice(prefix.length));
  const at = m ? stampDate(m[1]!) : undefined;
  return m && at ? { key, at, run: m[2]!, encrypted: m[3] !== undefined } : undefined;
}

export function parseDrillKey(sysid: string, key: string): { key: string; at: Date } | undefined {
  const prefix = drillPrefix(sysid);
  if (!key.startsWith(prefix)) return undefined;
  const m = DRILL_RE.exec(key.slice(prefix.length));
  const at = m ? stampDate(m[1]!) : undefined;
  return m && at ? { key, at } : undefined;
}
