/**
 * Local-directory storage. A stream is written to a temporary name, fsynced, then linked into place
 * (link(2) fails when the name exists, so nothing is ever replaced); a failure removes the temporary
 * file, so no final-named file ever holds a partial backup. Listings read every entry or fail.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, type Dirent } from 'node:fs';
import {
  access,
  constants,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  stat,
  unlink,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { OperatorError, errorMessage } from '../../core/errors.js';
import { EXIT } from '../../core/exit-codes.js';
import {
  ClockReading,
  ObjectExistsError,
  type DeleteOutcome,
  type LockedObject,
  type Storage,
  type StoredObject,
} from './storage.js';

export const PARTIAL_MARK = '.partial-';
const TEMP_RE = /\.partial-[0-9a-f]{8}$/;
const MAX_DEPTH = 8;
/** File systems without hard links: the name is checked, then renamed over (a small race, logged nowhere). */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EMLINK', 'ENOSYS']);

/** Whether a key is a temporary file of an unfinished write (and not a name that merely holds ".partial-"). */
export function isTemporaryKey(key: string): boolean {
  return TEMP_RE.test(key);
}

class VanishedEntry extends Error {}

export class FsStorage implements Storage {
  readonly root: string;
  readonly description: string;
  readonly #clock = new ClockReading();
  readonly clockMayBeLocal = true;

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
      throw new OperatorError(`backup directory ${this.root} is not writable: ${errorMessage(err)}`, {
        exitCode: EXIT.UNAVAILABLE,
        hint: readOnly
          ? 'its file system is mounted read-only: remount it read-write, or set BACKUP_DIR (or S3_BUCKET)'
          : 'create it and give the pg-maintd user write access, or set BACKUP_DIR (or S3_BUCKET)',
        cause: err,
      });
    }
  }

  #path(key: string): string {
    const segments = key.split('/');
    const p = resolve(this.root, key);
    if (
      key.includes('\0') ||
      key.includes('\\') ||
      segments.some((s) => s === '' || s === '.' || s === '..') ||
      !p.startsWith(this.root + sep)
    )
      throw new OperatorError(`"${key}" is not a key inside the backup directory`, {
        exitCode: EXIT.USAGE,
        hint: 'use a key as `pg-maintd backups list` prints it',
      });
    return p;
  }

  /**
   * The folder of `path`, with every symbolic link resolved, is that very folder of the backup
   * directory: a link planted in the directory cannot lead a write, a read, a listing or a delete
   * elsewhere, not even into another database's folder (the last part is opened with O_NOFOLLOW,
   * or created under a temporary name in this folder).
   */
  async #confined(path: string): Promise<void> {
    await this.#plainFolder(dirname(path));
  }

  /** The nearest of `folder` and the folders above it (up to the root) that exists, a link or not. */
  async #existingAncestor(folder: string): Promise<string> {
    let f = folder;
    while (f !== this.root && f !== dirname(f)) {
      try {
        await lstat(f);
        return f;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        f = dirname(f);
      }
    }
    return f;
  }

  async #plainFolder(folder: string): Promise<void> {
    const root = await realpath(this.root);
    const expected = join(root, relative(this.root, folder));
    const real = await realpath(folder);
    if (real !== expected)
      throw new OperatorError(
        `${folder} leads elsewhere (to ${real}) through a symbolic link, so nothing in it is read, listed or deleted`,
        {
          exitCode: EXIT.DATAERR,
          hint: 'pg-maintd never makes links: remove it from the backup directory',
        },
      );
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

  /** Writes to a temporary name, fsyncs, puts it in place; on failure removes the temporary file. */
  async #atomicWrite(key: string, write: (temp: string) => Promise<void>): Promise<void> {
    const final = this.#path(key);
    // mkdir follows a link too: the part that exists already is checked before anything is made
    await this.#plainFolder(await this.#existingAncestor(dirname(final)));
    await mkdir(dirname(final), { recursive: true });
    await this.#confined(final);
    const temp = `${final}${PARTIAL_MARK}${randomBytes(4).toString('hex')}`;
    try {
      await write(temp);
      await fsyncPath(temp);
      await this.#placeNew(temp, final, key);
      await fsyncPath(dirname(final));
    } finally {
      await unlink(temp).catch(() => undefined); // after link(2), or a failure: the temporary name goes
    }
  }

  async #placeNew(temp: string, final: string, key: string): Promise<void> {
    try {
      await link(temp, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code === 'EEXIST') throw new ObjectExistsError(key, this.description);
      if (!NO_LINKS.has(code)) throw err;
      const taken = await lstat(final).then(
        () => true,
        () => false,
      );
      if (taken) throw new ObjectExistsError(key, this.description);
      await rename(temp, final);
    }
  }

  async getStream(key: string): Promise<Readable> {
    const fh = await this.#openRegular(key);
    return fh.createReadStream();
  }

  async getSmall(key: string): Promise<Buffer | undefined> {
    let fh: FileHandle;
    try {
      fh = await this.#openRegular(key);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  /**
   * Opens a key for reading only if it is a regular file: a FIFO put in its place would block the
   * read (and the process's shutdown) for ever, a symbolic link would lead out of the directory.
   */
  async #openRegular(key: string): Promise<FileHandle> {
    const path = this.#path(key);
    await this.#confined(path);
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = await fh.stat().catch(async (err: unknown) => {
      await fh.close();
      throw err;
    });
    if (!st.isFile()) {
      await fh.close();
      throw new OperatorError(`${path} is not a regular file: pg-maintd never writes anything else`, {
        exitCode: EXIT.DATAERR,
        hint: 'move it out of the backup directory; restore another backup',
      });
    }
    return fh;
  }

  async list(prefix: string): Promise<StoredObject[]> {
    // an entry that vanished between readdir and stat is a write finishing (a temporary name
    // renamed) or retention deleting: look again; an entry that stays unreadable fails the listing
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#listOnce(prefix);
      } catch (err) {
        if (!(err instanceof VanishedEntry) || attempt >= 3) throw this.#listingError(err);
      }
    }
  }

  #listingError(err: unknown): OperatorError {
    if (err instanceof OperatorError) return err;
    return new OperatorError(
      `listing ${this.root} failed, so nothing was decided from it: ${errorMessage(err)}`,
      {
        exitCode: EXIT.UNAVAILABLE,
        hint: 'make every entry under the backup directory readable by the pg-maintd user (pg-maintd writes only regular files with plain names)',
        cause: err,
      },
    );
  }

  async #listOnce(prefix: string): Promise<StoredObject[]> {
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const dir = folder ? this.#path(folder) : this.root;
    const out: StoredObject[] = [];
    const walk = async (path: string, rel: string, depth: number): Promise<void> => {
      let entries: Dirent<Buffer>[];
      try {
        // readdir follows a link; the entries below are judged by their own type
        if (depth === 0) await this.#plainFolder(path);
        entries = await readdir(path, { withFileTypes: true, encoding: 'buffer' });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && depth === 0) return; // nothing stored yet
        throw err;
      }
      for (const entry of entries) {
        const name = utf8Name(entry.name, path);
        const key = rel ? `${rel}/${name}` : name;
        const full = join(path, name);
        if (entry.isDirectory()) {
          if (!prefix.startsWith(`${key}/`) && !key.startsWith(prefix)) continue;
          if (depth >= MAX_DEPTH) throw new Error(`${full}: folders nested deeper than ${MAX_DEPTH}`);
          await walk(full, key, depth + 1);
        } else if (entry.isFile() && key.startsWith(prefix)) {
          const st = await stat(full).catch((err: NodeJS.ErrnoException) => {
            throw err.code === 'ENOENT' ? new VanishedEntry(full) : err;
          });
          out.push({ key, size: st.size, lastModified: st.mtime });
        }
        // symbolic links and special files are never written by pg-maintd: not backups, not deleted
      }
    };
    await walk(dir, folder, 0);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(keys: string[]): Promise<DeleteOutcome> {
    const locked: LockedObject[] = [];
    let failure: unknown;
    for (const key of keys) {
      const path = this.#path(key);
      try {
        // unlink follows links in the folders above the file: a folder swapped for one since the
        // listing must not take the delete elsewhere
        await this.#confined(path);
        await unlink(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue;
        if (await this.#lockedFile(path, code)) locked.push({ key });
        else failure ??= err; // the other keys are still deleted; the first failure is reported
      }
    }
    if (failure) throw failure;
    return { locked };
  }

  /**
   * Whether a refused unlink is the file's own lock (chattr +i or +a, a WORM file system), not a
   * folder pg-maintd may not write: only then is it "retained", else a folder that lost its
   * permissions would pass for locked for ever.
   */
  async #lockedFile(path: string, code: string | undefined): Promise<boolean> {
    if (code !== 'EPERM' && code !== 'EACCES') return false;
    return access(dirname(path), constants.W_OK).then(
      () => true,
      () => false,
    );
  }

  async now(): Promise<Date | undefined> {
    const cached = this.#clock.now();
    if (cached) return cached;
    // a file's modification time is set by whoever serves the file system (an NFS server's clock,
    // or this host's for a local disk)
    const probe = join(this.root, `.pgmaintd-clock-${randomBytes(4).toString('hex')}`);
    try {
      await writeFile(probe, '', { flag: 'wx', mode: 0o600 });
      this.#clock.set((await stat(probe)).mtimeMs);
      return this.#clock.now();
    } catch {
      return undefined;
    } finally {
      await unlink(probe).catch(() => undefined);
    }
  }

  close(): void {}
}

function utf8Name(name: Buffer, dir: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(name);
  } catch {
    throw new OperatorError(
      `an entry in ${dir} has a name that is not valid UTF-8 (${name.toString('hex')} in hex), so the listing cannot be complete and nothing was decided from it`,
      {
        exitCode: EXIT.UNAVAILABLE,
        hint: 'pg-maintd never writes such names: move that entry out of the backup directory',
      },
    );
  }
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
