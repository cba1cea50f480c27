/**
 * `pg-maintd wal-fetch %f %p`, for restore_command: finds one WAL file in the store, checks it
 * against the tag in its name, and writes it where PostgreSQL asked, atomically. Three outcomes, told
 * apart because PostgreSQL reads them differently (see EXIT.RECOVERY_ABORT): found (exit 0); not in
 * the store (exit 1: PostgreSQL probes for files that do not exist, and the end of the archive is
 * where recovery ends); and anything else (a corrupt object, a gap before WAL that is stored, a store
 * that cannot be read) aborts recovery with the key named, never a shorter recovery that looks fine.
 */
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { StoredWal } from './store-keys.js';
import { parseWalKey, walPrefix } from './store-keys.js';
import { readHistories } from './timeline-histories.js';
import { fetchWalFile, storedUnder, type WalStore } from './wal-object.js';
import { DEFAULT_SEGMENT_BYTES, parseWalFileName, segNoOf } from './wal-name.js';

export type Resolved = { kind: 'found'; content: Buffer; from: string } | { kind: 'missing'; why: string };

/** Aborts recovery: the message goes to the server's log, the exit code above 125. */
export function recoveryAbort(message: string, hint: string, cause?: unknown): OperatorError {
  return new OperatorError(message, { exitCode: EXIT.RECOVERY_ABORT, hint, cause });
}

/** What the store holds for `name`: its verified content, or why there is none (a gap throws). */
export async function resolveWal(
  ws: WalStore,
  name: string,
  signal?: AbortSignal,
  segmentBytes = ws.segmentBytes ?? DEFAULT_SEGMENT_BYTES,
): Promise<Resolved> {
  // the cluster's segment size maps names to positions: with the default, a 1 MiB cluster's
  // segment 0x100 of a log would not be a name at all, and recovery would end there
  ws = { ...ws, segmentBytes: ws.segmentBytes ?? segmentBytes };
  const parsed = parseWalFileName(name, segmentBytes);
  if (!parsed) return { kind: 'missing', why: 'not a WAL file name pg-maintd archives' };
  let stored: StoredWal[];
  try {
    stored = await storedUnder(ws, name, segmentBytes);
  } catch (err) {
    throw recoveryAbort(
      `cannot list ${name} in ${ws.storage.description}: ${errorMessage(err)}`,
      'make the store reachable and start the server again: recovery continues where it stopped',
      err,
    );
  }
  const finished = stored.filter((s) => !s.partial);
  const pick = async (copies: StoredWal[]): Promise<Resolved> => {
    // several finished copies: one planted beside ours must not hide it, so serve the one that verifies
    let first: unknown;
    for (const s of copies) {
      try {
        return { kind: 'found', content: await fetchWalFile(ws, s, signal), from: s.key };
      } catch (err) {
        first ??= err;
      }
    }
    const e = first as OperatorError;
    throw recoveryAbort(`restore_command: ${e.message}`, e.hint ?? '', first);
  };
  if (finished.length > 0) return pick(finished);
  if (parsed.kind === 'history') return { kind: 'missing', why: 'no such history file in the store' };
  // the finished segment is not stored: later WAL on the way recovery goes from here means WAL is missing
  let later: string | undefined;
  try {
    later = await laterWal(ws, parsed, segmentBytes, signal);
  } catch (err) {
    throw recoveryAbort(
      `cannot tell whether later WAL than ${name} is stored in ${ws.storage.description}: ${errorMessage(err)}`,
      'make the store reachable and start the server again',
      err,
    );
  }
  if (later)
    throw recoveryAbort(
      `WAL segment ${name} is missing from ${ws.storage.description} while later WAL (${later}) is stored: the chain has a gap, recovery cannot pass it`,
      'restore to a target before the gap, or from a base backup taken after it (`pg-maintd pitr list`, `pg-maintd pitr verify`)',
    );
  // the newest segment of its timeline: what was stored of it before it was finished, if anything
  // only the largest: serving a smaller one when it fails would end recovery early, silently
  const partial = stored.find((s) => s.partial);
  if (partial) return pick([partial]);
  return { kind: 'missing', why: 'not in the store (the end of the archived WAL)' };
}

/**
 * A stored WAL file (finished segment or partial) after `seg` on its timeline, or on a later timeline
 * that branched from it at or after `seg` (read from the stored history files): recovery heading
 * there needs `seg`, so its absence is a gap, not the end of the archive.
 */
async function laterWal(
  ws: WalStore,
  seg: { timeline: number; segNo: bigint },
  segmentBytes: number,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const all: StoredWal[] = [];
  for (const o of await ws.storage.list(walPrefix(ws.sysid))) {
    const w = parseWalKey(ws.sysid, o.key, segmentBytes);
    if (w) all.push(w);
  }
  const onPath = new Set([seg.timeline]);
  // read as retention reads them: an encrypted one's name says where it branched, no identity needed
  const histories = await readHistories(ws, all, signal);
  for (const h of all) {
    if (h.file.kind !== 'history' || h.file.timeline < seg.timeline) continue;
    const history = histories.get(h.file.timeline)!;
    if (h.file.timeline === seg.timeline) {
      // recovery asks the newest timeline first for every segment: one from before this timeline
      // began never exists on it, and its absence is no gap
      const began = history.at(-1)?.switchLsn;
      if (began !== undefined && seg.segNo < segNoOf(began, segmentBytes)) return undefined;
      continue;
    }
    const branch = history.find((s) => s.parent === seg.timeline);
    if (branch && segNoOf(branch.switchLsn, segmentBytes) >= seg.segNo) onPath.add(h.file.timeline);
  }
  const later = all.find(
    (w) => w.file.kind === 'segment' && onPath.has(w.file.timeline) && w.file.segNo > seg.segNo,
  );
  return later && (later.partial ? `${later.file.name}.partial` : later.file.name);
}

/** Writes `content` to `dest` atomically: a temporary file beside it, flushed, then renamed. */
export async function writeAtomically(
  dest: string,
  content: Buffer,
  owner?: { uid: number; gid: number },
): Promise<void> {
  const tmp = join(dirname(dest), `.${basename(dest)}.pgmaintd-${process.pid}.tmp`);
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(content);
      if (owner) await fh.chown(owner.uid, owner.gid);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
