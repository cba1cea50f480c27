/**
 * One WAL file (segment, partial segment or history file) in the store: compressed with gzip, named
 * with a tag that binds its uncompressed bytes to its name (store-keys.ts). Storing is idempotent:
 * the same bytes under the same name are already there (success); different bytes under a name
 * already stored are refused, as archive_command must (the archive would otherwise hold two
 * histories). Fetching checks the tag after decompressing, so a corrupt, truncated or swapped
 * object is an error that names it, never WAL handed to PostgreSQL.
 *
 * With encryption recipients, segments and partials are encrypted with age after gzip, and their
 * name carries two tags. age is randomized: the same segment encrypts to different bytes each time,
 * and the writer holds no identity to decrypt what is stored. So the first tag stays the one of the
 * plaintext, as for plain objects: a re-push of the same segment finds its tag in a stored name
 * (plain or encrypted) and is "already stored", a different segment has another tag and is a
 * conflict. The second tag binds the stored (encrypted) bytes to the name and the first tag (their
 * SHA-256, or an HMAC of the system identifier, the name, the first tag and that SHA-256 when
 * signing): whoever holds no identity (the archiver judging a conflicting copy, a verification, a
 * reader before decrypting) still tells an intact object from a damaged or planted one. A reader
 * with the identity checks both: the stored bytes, then the plaintext after decrypting.
 * History files are encrypted alike, their name carrying the switch that began their timeline
 * (store-keys.ts): readers without the identity follow the timelines from the names, a reader with
 * it checks the name against the file's last line.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb, type ZlibOptions } from 'node:zlib';
import { IdentityError, decryptBuffer, encryptBuffer, readIdentities } from '../backup/encryption.js';
import type { Signer } from '../backup/signing.js';
import { ObjectExistsError, type Storage } from '../backup/storage/storage.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { writtenBytes } from './pg-control.js';
import {
  lineageText,
  parseWalKey,
  partialName,
  walKey,
  walPrefix,
  type Lineage,
  type StoredWal,
} from './store-keys.js';
import { parseHistory } from './wal-name.js';

const MAX_SEGMENT_BYTES = 1 << 30;

const gzip = promisify<Buffer, ZlibOptions, Buffer>(gzipCb);
const gunzip = promisify<Buffer, ZlibOptions, Buffer>(gunzipCb);

/** A history file is a line per timeline switch: far below this. */
const MAX_HISTORY_BYTES = 1 << 20;
/** What gzip may add to incompressible WAL (a few bytes per 32 KiB block), with room to spare. */
const GZIP_SLACK_BYTES = 1 << 20;
const WAL_GZIP_LEVEL = 6;

export interface WalStore {
  storage: Storage;
  sysid: string;
  signer?: Signer | undefined;
  /** The cluster's WAL segment size (names map to positions by it; no segment is larger). */
  segmentBytes?: number | undefined;
  /** Writers: the age recipients to encrypt to now (none: plain); asked at every object, for rotations. */
  recipients?: (() => string[]) | undefined;
  /** Readers: BACKUP_ENCRYPTION_IDENTITY_FILE, read when an encrypted object is met. */
  identityFile?: string | undefined;
}

/**
 * The tag for a file's bytes under its name: the SHA-256, or when signing an HMAC of the cluster's
 * system identifier, the name (a partial's with its byte count, partialName) and the SHA-256, so a
 * signed object copied in from another cluster, or a partial under a larger byte count, is refused.
 */
export function walTag(signer: Signer | undefined, sysid: string, name: string, content: Buffer): string {
  const sha = createHash('sha256').update(content).digest('hex');
  return signer ? signer.tag(`pg-maintd wal ${sysid} ${name} ${sha}`) : sha;
}

/** The tag binding an encrypted object's stored bytes to its name and plaintext tag. */
export function storedTag(
  signer: Signer | undefined,
  sysid: string,
  name: string,
  tag: string,
  stored: Buffer,
): string {
  const sha = createHash('sha256').update(stored).digest('hex');
  return signer ? signer.tag(`pg-maintd wal-stored ${sysid} ${name} ${tag} ${sha}`) : sha;
}

function storedTagMatches(
  signer: Signer | undefined,
  sysid: string,
  name: string,
  w: StoredWal,
  stored: Buffer,
) {
  const sha = createHash('sha256').update(stored).digest('hex');
  return signer
    ? signer.tagMatches(`pg-maintd wal-stored ${sysid} ${name} ${w.tag} ${sha}`, w.storedTag!)
    : sha === w.storedTag;
}

function tagMatches(
  signer: Signer | undefined,
  sysid: string,
  name: string,
  content: Buffer,
  tag: string,
): boolean {
  const sha = createHash('sha256').update(content).digest('hex');
  return signer ? signer.tagMatches(`pg-maintd wal ${sysid} ${name} ${sha}`, tag) : sha === tag;
}

export type PutResult = { key: string; stored: 'new' | 'already'; compressedBytes: number };

export class WalConflictError extends OperatorError {
  constructor(name: string, existing: string, where: string) {
    super(
      `a different ${name} is already stored in ${where} (${existing}): refusing to archive a second one`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'two clusters with the same system identifier archive into one place (a restored copy still running, or a split brain): stop the one that should not archive, and take a new base backup on the other',
      },
    );
    this.name = 'WalConflictError';
  }
}

/**
 * Stores a finished segment or a history file. Resolves only once it is durably in the store (or
 * an identical copy already was); a different copy under the name rejects with WalConflictError.
 */
export async function putWalFile(
  ws: WalStore,
  name: string,
  content: Buffer,
  signal?: AbortSignal,
): Promise<PutResult> {
  const tag = walTag(ws.signer, ws.sysid, name, content);
  const existing = await storedUnder(ws, name);
  // the plaintext's tag, whether that copy is plain or encrypted (randomized: never the same bytes)
  const same = existing.find((e) => !e.partial && e.tag === tag);
  if (same) return { key: same.key, stored: 'already', compressedBytes: 0 };
  for (const other of existing.filter((e) => !e.partial)) {
    // only a copy that verifies is another history; one that does not (planted, or from another
    // cluster) must not stop archiving forever: fetch serves the copy that verifies, ours. An
    // encrypted copy is judged by its stored bytes: the writer has no identity
    try {
      await (other.storedTag ? fetchStored(ws, other, name, signal) : fetchWalFile(ws, other, signal));
    } catch (err) {
      if (err instanceof OperatorError && err.exitCode === EXIT.DATAERR) continue;
      throw err;
    }
    throw new WalConflictError(name, other.key, ws.storage.description);
  }
  return put(ws, name, tag, content, signal);
}

/**
 * Stores the part of the segment being written that holds WAL so far (`validBytes`), under a name
 * that never takes the finished segment's. Nothing is written when that very content is stored.
 */
export async function putPartial(
  ws: WalStore,
  segment: string,
  content: Buffer,
  validBytes: number,
  signal?: AbortSignal,
): Promise<PutResult> {
  const name = partialName(segment, validBytes);
  const tag = walTag(ws.signer, ws.sysid, name, content);
  if (ws.recipients?.().length) {
    // encrypted, the same content never makes the same key: look for its plaintext tag first
    const same = (await ws.storage.list(`${walPrefix(ws.sysid)}${name}-${tag}`)).find(
      (o) => parseWalKey(ws.sysid, o.key, ws.segmentBytes)?.tag === tag,
    );
    if (same) return { key: same.key, stored: 'already', compressedBytes: 0 };
  }
  return put(ws, name, tag, content, signal);
}

async function put(
  ws: WalStore,
  name: string,
  tag: string,
  content: Buffer,
  signal?: AbortSignal,
): Promise<PutResult> {
  const recipients = ws.recipients?.() ?? [];
  let body = await gzip(content, { level: WAL_GZIP_LEVEL });
  let key = walKey(ws.sysid, name, tag);
  if (recipients.length > 0) {
    const lineage = name.endsWith('.history') ? lineageOf(name, content) : undefined;
    body = await encryptBuffer(body, recipients);
    const bound = storedName(name, lineage);
    key = walKey(ws.sysid, name, tag, storedTag(ws.signer, ws.sysid, bound, tag, body), lineage);
  }
  try {
    await ws.storage.putStream(key, Readable.from([body]), {
      signal: signal ?? new AbortController().signal,
      expectedBytes: body.length,
    });
  } catch (err) {
    // the same name holds the same tag, hence the same bytes: another writer got there first
    if (err instanceof ObjectExistsError) return { key, stored: 'already', compressedBytes: 0 };
    throw err;
  }
  return { key, stored: 'new', compressedBytes: body.length };
}

/**
 * The switch that began a history file's timeline (its last line), which an encrypted history's name
 * carries. One that does not parse is refused rather than stored where no keyless reader could
 * follow it (PostgreSQL never writes such a file).
 */
function lineageOf(name: string, content: Buffer): Lineage {
  const last = parseHistory(content.toString('utf8'))?.at(-1);
  const timeline = parseInt(name.slice(0, 8), 16);
  if (!last || last.parent >= timeline)
    throw new OperatorError(`${name} does not read as a timeline history file: not stored`, {
      exitCode: EXIT.DATAERR,
      hint: 'PostgreSQL writes these files itself: check what wrote this one into pg_wal',
    });
  return { parent: last.parent, switchLsn: last.switchLsn };
}

/** The name a stored-bytes tag binds: an encrypted history's with its lineage, so no name can move it. */
function storedName(name: string, lineage: Lineage | undefined): string {
  return lineage ? `${name}-${lineageText(lineage)}` : name;
}

/** The stored copies of a WAL file: the finished one first, then its partials, the largest first. */
export async function storedUnder(
  ws: WalStore,
  name: string,
  segmentBytes = ws.segmentBytes,
): Promise<StoredWal[]> {
  const objects = await ws.storage.list(`${walPrefix(ws.sysid)}${name}`);
  const out: StoredWal[] = [];
  for (const o of objects) {
    const parsed = parseWalKey(ws.sysid, o.key, segmentBytes);
    if (parsed && parsed.file.name === name) out.push(parsed);
  }
  const rank = (w: StoredWal) => (w.partial ? w.validBytes : Number.MAX_SAFE_INTEGER);
  return out.sort((a, b) => rank(b) - rank(a));
}

/**
 * Reads one stored WAL object's bytes, as stored, bounded; an encrypted one is checked against the
 * tag of its stored bytes (no identity needed). Rejects with a message naming the key.
 */
async function fetchStored(ws: WalStore, stored: StoredWal, name: string, signal?: AbortSignal) {
  // unknown: the largest PostgreSQL allows, so a real segment is never taken for a bomb
  const segmentBytes = ws.segmentBytes ?? MAX_SEGMENT_BYTES;
  // read from a store that may be hostile: never more than the file can be, compressed or not
  // (the slack covers age's header and its 16 bytes per 64 KiB as well)
  const maxBytes = stored.file.kind === 'history' ? MAX_HISTORY_BYTES : segmentBytes;
  const maxCompressed = maxBytes + GZIP_SLACK_BYTES;
  let compressed: Buffer;
  let oversized = false;
  try {
    const stream = await ws.storage.getStream(stored.key, signal);
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxCompressed) {
        stream.destroy();
        oversized = true;
        break;
      }
      chunks.push(chunk);
    }
    compressed = Buffer.concat(chunks);
  } catch (err) {
    throw new OperatorError(
      `reading WAL object ${stored.key} from ${ws.storage.description} failed: ${errorMessage(err)}`,
      {
        exitCode: EXIT.UNAVAILABLE,
        hint: 'check the store is reachable; recovery asks again',
        cause: err,
      },
    );
  }
  if (oversized) throw corrupt(stored.key, `it is larger than ${maxCompressed} bytes compressed`);
  if (
    stored.storedTag &&
    !storedTagMatches(ws.signer, ws.sysid, storedName(name, stored.lineage), stored, compressed)
  )
    throw corrupt(
      stored.key,
      ws.signer
        ? 'its stored bytes do not match the tag in its name under any key of BACKUP_SIGNING_KEY_FILE (altered, or written without the key)'
        : 'its stored bytes do not hash to the SHA-256 in its name (altered or corrupted)',
    );
  return { compressed, maxBytes, segmentBytes };
}

/** Checks an encrypted object's stored bytes against its name, without the identity. */
export async function checkStoredWal(ws: WalStore, stored: StoredWal, signal?: AbortSignal): Promise<void> {
  const name = stored.partial ? partialName(stored.file.name, stored.validBytes) : stored.file.name;
  await fetchStored(ws, stored, name, signal);
}

/** Reads, decrypts, decompresses and checks one stored WAL file; rejects with a message naming the key. */
export async function fetchWalFile(ws: WalStore, stored: StoredWal, signal?: AbortSignal): Promise<Buffer> {
  const name = stored.partial ? partialName(stored.file.name, stored.validBytes) : stored.file.name;
  const got = await fetchStored(ws, stored, name, signal);
  const { maxBytes, segmentBytes } = got;
  let compressed = got.compressed;
  if (stored.storedTag) {
    // the identity is read here, where it is needed: the archiver and keyless readers never come here
    let identities: string[];
    try {
      identities = readIdentities(ws.identityFile);
    } catch (err) {
      const e = err as OperatorError;
      throw new IdentityError(`WAL object ${stored.key} is encrypted (age): ${e.message}`, {
        exitCode: e.exitCode,
        hint: `${e.hint ?? 'set BACKUP_ENCRYPTION_IDENTITY_FILE'}; or restore with \`pg-maintd pitr restore --start\`, whose own process decrypts WAL for the server`,
      });
    }
    compressed = await decryptBuffer(compressed, identities, `WAL object ${stored.key}`);
  }
  let content: Buffer;
  try {
    content = await gunzip(compressed, { maxOutputLength: maxBytes });
  } catch (err) {
    throw corrupt(stored.key, `it does not decompress (${errorMessage(err)})`);
  }
  if (!tagMatches(ws.signer, ws.sysid, name, content, stored.tag))
    throw corrupt(
      stored.key,
      ws.signer
        ? 'its content does not match the tag in its name under any key of BACKUP_SIGNING_KEY_FILE (altered, or written without the key)'
        : 'its content does not hash to the SHA-256 in its name (altered or corrupted)',
    );
  // the switch in an encrypted history's name is what keyless readers follow: it must be the file's
  const last = stored.lineage && parseHistory(content.toString('utf8'))?.at(-1);
  if (
    stored.lineage &&
    (last?.parent !== stored.lineage.parent || last.switchLsn !== stored.lineage.switchLsn)
  )
    throw corrupt(
      stored.key,
      `its name says timeline ${stored.lineage.parent} switched at ${lineageText(stored.lineage)}, its content does not`,
    );
  // the byte count is in the name (newest partial = largest): it must be what the content holds
  if (stored.partial && (stored.validBytes > segmentBytes || stored.validBytes !== writtenBytes(content)))
    throw corrupt(
      stored.key,
      `its name says ${stored.validBytes} bytes of WAL, its content holds ${writtenBytes(content)} (segment size ${segmentBytes})`,
    );
  return content;
}

function corrupt(key: string, why: string): OperatorError {
  return new OperatorError(`WAL object ${key} is corrupt: ${why}`, {
    exitCode: EXIT.DATAERR,
    hint: 'recovery cannot pass this point with it: restore to a target before it, or from a base backup taken after it (`pg-maintd pitr list`)',
  });
}
