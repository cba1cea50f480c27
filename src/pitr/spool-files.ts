/**
 * The spool's files as the uploader handles them: read without following a symbolic link and within
 * a size (whoever can write the spool must not make the daemon upload a file a link points at),
 * removals made durable, and files that are not this cluster's WAL renamed aside.
 */
import { constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Renames `name` in the spool to a name neither pg_receivewal nor the uploader takes for WAL
 * (`<name>.rejected-<time>-<random>`): in place, so nothing an attacker puts in the spool (a link
 * named like a folder) can send the file elsewhere. Its new path, or undefined when it is gone
 * already (a sweep running beside this one moved it, or it was renamed finished meanwhile).
 */
export async function moveAside(spoolDir: string, name: string): Promise<string | undefined> {
  const to = join(spoolDir, `${name}${REJECTED_SUFFIX}${Date.now()}-${randomBytes(3).toString('hex')}`);
  try {
    await rename(join(spoolDir, name), to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  await fsyncDir(spoolDir);
  return to;
}

export const REJECTED_SUFFIX = '.rejected-';

/** Makes a removal in `dir` durable: a crash must not bring back a file already stored (harmless, but noisy). */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A timeline history file is a line per switch: far below this. */
export const MAX_HISTORY_BYTES = 1 << 20;

/** The first `bytes` of a spool file (fewer if it is shorter), read as readSpoolFile reads. */
export async function readSpoolHead(path: string, bytes: number): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (!(await fh.stat()).isFile()) throw new Error(`${path} is not a regular file`);
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Reads a spool file without following a symbolic link (whoever can write the spool must not make
 * the daemon upload a file it points at) and refusing anything but a regular file up to `max` bytes.
 */
export async function readSpoolFile(path: string, max: number): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const info = await fh.stat();
    if (!info.isFile()) throw new Error(`${path} is not a regular file`);
    if (info.size > max)
      throw new Error(`${path} has ${info.size} bytes, more than a WAL file holds (${max})`);
    const buf = Buffer.alloc(info.size);
    const { bytesRead } = await fh.read(buf, 0, info.size, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
