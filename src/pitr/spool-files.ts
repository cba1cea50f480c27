/**
 * The spool's files as the uploader handles them: read without following a symbolic link and within
 * a size (whoever can write the spool must not make the daemon upload a file a link points at),
 * removals made durable, and files that are not this cluster's WAL moved aside.
 */
import { constants } from 'node:fs';
import { mkdir, open, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Where files that are not this cluster's WAL go: pg_receivewal looks only at the spool's own files. */
export const REJECTED_DIR = 'rejected';

/** Moves `name` into the spool's rejected folder under a name not taken there; its new path. */
export async function moveAside(spoolDir: string, name: string): Promise<string> {
  const dir = join(spoolDir, REJECTED_DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let to = join(dir, name);
  for (
    let n = 1;
    await stat(to).then(
      () => true,
      () => false,
    );
    n++
  )
    to = join(dir, `${name}.${n}`);
  await rename(join(spoolDir, name), to);
  await fsyncDir(dir);
  await fsyncDir(spoolDir);
  return to;
}

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
