/**
 * Writing a file where a link planted by someone else could lead root's write elsewhere: nothing at
 * `path` but a regular file is replaced, and the bytes go to a new file (O_EXCL, random name) renamed
 * over it, so no symlink or hard link on the way is ever opened for writing.
 */
import { randomBytes } from 'node:crypto';
import { lstat, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { OperatorError } from '../core/errors.js';

export async function writeFileNoFollow(
  path: string,
  content: string | Buffer,
  o: { mode?: number; gid?: number } = {},
): Promise<void> {
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (st && !st.isFile())
    throw new OperatorError(
      `refusing to write ${path}: it is not a regular file (a link or a special file)`,
      {
        hint: 'the restored files are not what pg-maintd wrote: delete the directory and restore again',
      },
    );
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', o.mode ?? 0o600);
    try {
      await fh.writeFile(content);
      if (o.gid !== undefined) await fh.chown(process.getuid?.() ?? 0, o.gid);
      if (o.mode !== undefined) await fh.chmod(o.mode);
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
