/**
 * `pg-maintd wal-push %p`, for archive_command: stores one WAL file the server hands over and
 * returns only once it is durably in the store. PostgreSQL removes or recycles the file after a
 * zero exit, so every other outcome must be a failure it retries: an identical copy already stored
 * is success (a retry after a lost answer), a different one is refused.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { writtenBytes } from './pg-control.js';
import { putPartial, putWalFile, type PutResult, type WalStore } from './wal-object.js';
import { DEFAULT_SEGMENT_BYTES, parseWalFileName, validSegmentBytes } from './wal-name.js';

/** A file name archive_command may be given that recovery never asks for (a backup's history file). */
const BACKUP_HISTORY_RE = /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/;
const PARTIAL_RE = /^([0-9A-F]{24})\.partial$/;

export type PushOutcome =
  (PutResult & { kind: 'segment' | 'history' | 'partial' }) | { kind: 'skipped'; why: string };

export async function pushWalFile(ws: WalStore, path: string, signal?: AbortSignal): Promise<PushOutcome> {
  const name = basename(path);
  if (BACKUP_HISTORY_RE.test(name))
    return { kind: 'skipped', why: 'a backup history file, which recovery does not read' };
  const partial = PARTIAL_RE.exec(name);
  // the cluster's segment size maps names to positions (initdb --wal-segsize): from pg_control when
  // known, else from the file itself (a segment, or a .partial as pg_receivewal pads it, has it)
  let segmentBytes = ws.segmentBytes;
  if (segmentBytes === undefined) {
    const size = await stat(path).then(
      (i) => i.size,
      () => 0,
    );
    segmentBytes = validSegmentBytes(size) ? size : DEFAULT_SEGMENT_BYTES;
  }
  ws = { ...ws, segmentBytes };
  const parsed = parseWalFileName(partial ? partial[1]! : name, segmentBytes);
  if (!parsed)
    throw new OperatorError(
      `${name} is not a WAL file name (a segment, a timeline history file, or a .partial segment)`,
      {
        exitCode: EXIT.USAGE,
        hint: "use archive_command = 'pg-maintd wal-push %p' (PostgreSQL replaces %p with the file's path)",
      },
    );
  let content: Buffer;
  try {
    const info = await stat(path);
    if (parsed.kind === 'segment' && !partial && info.size !== segmentBytes)
      throw new Error(`it has ${info.size} bytes, not the WAL segment size ${segmentBytes}`);
    content = await readFile(path);
  } catch (err) {
    throw new OperatorError(`cannot read WAL file ${path}: ${errorMessage(err)}`, {
      exitCode: EXIT.USAGE,
      hint: 'archive_command runs in the data directory; give it %p as PostgreSQL passes it',
      cause: err,
    });
  }
  if (partial)
    return {
      kind: 'partial',
      ...(await putPartial(ws, partial[1]!, content, writtenBytes(content), signal)),
    };
  return { kind: parsed.kind, ...(await putWalFile(ws, name, content, signal)) };
}
