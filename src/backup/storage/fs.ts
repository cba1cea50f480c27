/**
 * Local-directory storage. A stream is written to a temporary name, fsynced, then renamed; a failure
 * removes the temporary file, so no final-named file ever holds a partial backup.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import {
  access,
  constants,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { OperatorError } from '../../errors.js';
import { EXIT } from '../../exit-codes.js';
import type { Storage, StoredObject } from './storage.js';

export const PARTIAL_MARK = '.partial-';

export class FsStorage implements Storage {
  readonly root: string;
  readonly description: string;

  constructor(dir: string) {
    this.root = resolve(dir);
    this.description = this.root;
  }

  async check(): Promise<void> {
    try {
      await mkdir(this.root, { recursive: true });
      await access(this.root, constants.W_OK | constants.R_OK);
    } catch (err) {
      // root passes every permission check, so a read-only mount is the likely cause there: say so
      const readOnly = (err as NodeJS.ErrnoException).code === 'EROFS';
      throw new OperatorError(`backup directory ${this.root} is not writable: ${(err as Error).message}`, {
        exitCode: EXIT.UNAVAILABLE,
        hint: readOnly
          ? 'its file system is mounted read-only: remount it read-write, or set BACKUP_DIR (or S3_BUCKET)'
          : 'create it and give the pg-maintd user write access, or set BACKUP_DIR (or S3_BUCKET)',
        cause: err,
      });
    }
  }

  #path(key: string): string {
    const p = resolve(this.root, key);
    if (!p.startsWith(this.root + sep)) throw new Error(`key escapes the backup directory: ${key}`);
    return p;
  }

  async putStream(
    key: string,
    body: Readable,
    opts: { signal: AbortSignal; progress?: (bytes: number) => void },
  ): Promise<void> {
    await this.#atomicWrite(key, async (temp) => {
      const out = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
      if (opts.progress) {
        const report = opts.progress;
        body.on('data', () => report(out.bytesWritten));
      }
      await pipeline(body, out, { signal: opts.signal });
    });
  }

  async putSmall(key: string, content: string): Promise<void> {
    await this.#atomicWrite(key, (temp) => writeFile(temp, content, { mode: 0o600, flag: 'wx' }));
  }

  /** Writes to a temporary name, fsyncs, renames into place; on failure removes the temporary file. */
  async #atomicWrite(key: string, write: (temp: string) => Promise<void>): Promise<void> {
    const final = this.#path(key);
    await mkdir(dirname(final), { recursive: true });
    const temp = `${final}${PARTIAL_MARK}${randomBytes(4).toString('hex')}`;
    try {
      await write(temp);
      await fsyncPath(temp);
      await rename(temp, final);
      await fsyncPath(dirname(final));
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
  }

  async getStream(key: string): Promise<Readable> {
    const p = this.#path(key);
    await access(p, constants.R_OK);
    return createReadStream(p);
  }

  async getSmall(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.#path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const dir = folder ? this.#path(folder) : this.root;
    let names: string[];
    try {
      names = await readdir(dir, { recursive: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: StoredObject[] = [];
    for (const name of names) {
      const full = join(dir, name);
      const key = relative(this.root, full).split(sep).join('/');
      if (!key.startsWith(prefix)) continue;
      const st = await stat(full).catch(() => undefined);
      if (st?.isFile()) out.push({ key, size: st.size, lastModified: st.mtime });
    }
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  async delete(keys: string[]): Promise<void> {
    for (const key of keys) {
      await unlink(this.#path(key)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
  }

  close(): void {}
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
