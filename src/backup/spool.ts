/**
 * What a restore runs is a private copy: the object is read from the store once, hashed and counted
 * on its way into a file only this process can reach (a fresh folder of mode 0700), checked against
 * the manifest, and only then restored, from that copy. Whatever a writer of the store does
 * afterwards (a file rewritten in place, an object replaced) cannot change what runs: without this, a
 * script could commit what it liked before a checksum at the end caught it.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { GoodBackup } from './catalog.js';
import { ChecksumVerifier } from './checksum.js';
import type { Storage } from './storage/storage.js';

export interface CheckedCopy {
  /** The checked bytes from the first; each call a new stream. */
  read(): Readable;
  remove(): Promise<void>;
}

/** What a checked copy needs of a stored object: its key, and the checksum and size its manifest gives. */
export type CheckedObject = Pick<GoodBackup, 'key' | 'size'> & { manifest: { sha256: string; size: number } };

export async function checkedCopy(
  storage: Storage,
  backup: CheckedObject,
  opts: { dir?: string | undefined; signal?: AbortSignal | undefined },
): Promise<CheckedCopy> {
  const parent = opts.dir ?? tmpdir();
  const folder = await mkdtemp(join(parent, 'pgmaintd-restore-')); // mode 0700
  const file = join(folder, 'backup');
  const remove = () => rm(folder, { recursive: true, force: true });
  try {
    const verifier = new ChecksumVerifier(backup.manifest.sha256, backup.key);
    await pipeline(
      await storage.getStream(backup.key, opts.signal),
      verifier,
      createWriteStream(file, { flags: 'wx', mode: 0o600 }),
      { signal: opts.signal },
    );
    if (verifier.bytes !== backup.manifest.size)
      throw new OperatorError(
        `${backup.key} holds ${verifier.bytes} bytes, its manifest says ${backup.manifest.size}: nothing of it ran`,
        {
          exitCode: EXIT.DATAERR,
          hint: 'the object was altered or truncated in storage; restore another backup',
        },
      );
  } catch (err) {
    await remove();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      const free = await statfs(parent)
        .then((s) => s.bavail * s.bsize)
        .catch(() => undefined);
      throw new OperatorError(
        `the checked copy of ${backup.key} needs ${backup.size} bytes in ${parent}${free === undefined ? '' : ` (${free} free)`}: nothing was restored`,
        {
          exitCode: EXIT.UNAVAILABLE,
          hint: 'free space there, or set RESTORE_SPOOL_DIR to a folder with room for the largest backup (compressed)',
          cause: err,
        },
      );
    }
    throw err;
  }
  return { read: () => createReadStream(file), remove };
}
