/**
 * Serving restore_command from pg-maintd's own process while `pitr restore --start` (or a drill)
 * runs: the server's restore_command (`wal-fetch`, run as the server's OS user, which may not be
 * able to read the store or the signing key) asks for a file with an empty request
 * `in/<name>.<id>.want`; this process answers with the verified file `out/<name>` (copied into place
 * by wal-fetch without touching the store), `out/<name>.<id>.missing`, or `out/<name>.<id>.error`
 * holding the message that aborts recovery. After each segment it fetches the next few ahead, so
 * replay rarely waits for the store. out/ACTIVE marks the exchange as served.
 *
 * This process may be root, and the server's user must never steer root's writes: the exchange is a
 * fresh directory outside the data directory that only this process can write (readable by the
 * server's group), where every file is created new (O_EXCL, random name) and renamed; in/ is the
 * server user's, and of it this process only lists names and unlinks them (unlink follows no link).
 * The data directory learns the exchange's path from PREFETCH_POINTER, written before it is handed
 * to the server's user.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  chmod,
  chown,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  unlink,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { ACTIVE, IN_DIR, OUT_DIR, PREFETCH_POINTER, TAKEN_RE, WANT_RE } from './prefetch-client.js';
import { writeFileNoFollow } from './safe-write.js';
import { resolveWal } from './wal-fetch.js';
import type { WalStore } from './wal-object.js';
import { DEFAULT_SEGMENT_BYTES, parseWalFileName, segmentName } from './wal-name.js';

const AHEAD = 4;
const POLL_MS = 50;

export interface Owner {
  uid: number;
  gid: number;
}

export class Prefetcher extends Service {
  readonly name = 'wal-prefetch';
  /** The exchange directory (set by start). */
  dir = '';
  /** WAL files handed over so far (served from ahead or on request). */
  fetched = 0;
  #timer: NodeJS.Timeout | undefined;
  #busy = new Set<string>();
  #ahead = new Map<string, Promise<void>>();
  #abort = new AbortController();

  constructor(
    private readonly dataDir: string,
    private readonly ws: WalStore,
    private readonly logger: Logger,
    private readonly owner: Owner | undefined,
    private readonly segmentBytes = DEFAULT_SEGMENT_BYTES,
  ) {
    super();
  }

  get #out(): string {
    return join(this.dir, OUT_DIR);
  }

  get #in(): string {
    return join(this.dir, IN_DIR);
  }

  /** Call before the data directory is handed to the server's user: it writes the pointer there. */
  protected async onStart(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), 'pgmaintd-wal-'));
    const group = this.owner?.gid;
    await chmod(this.dir, group === undefined ? 0o700 : 0o750);
    await mkdir(this.#out, { mode: 0o700 });
    await chmod(this.#out, group === undefined ? 0o700 : 0o750);
    await mkdir(this.#in, { mode: 0o700 });
    if (this.owner) {
      // directories this process just made, in a directory only it can write: nothing to follow
      await chown(this.dir, process.getuid?.() ?? 0, this.owner.gid);
      await chown(this.#out, process.getuid?.() ?? 0, this.owner.gid);
      await chown(this.#in, this.owner.uid, this.owner.gid);
    }
    await this.#write(ACTIVE, Buffer.from(`${process.pid}\n`));
    await writeFileNoFollow(join(this.dataDir, PREFETCH_POINTER), `${JSON.stringify({ dir: this.dir })}\n`, {
      mode: 0o644,
    });
    const tick = () => {
      this.#scan()
        .catch((err: unknown) =>
          this.logger.warn(
            { job: 'pitr-restore', err: { message: errorMessage(err) } },
            'prefetch scan failed',
          ),
        )
        .finally(() => {
          if (this.running) this.#timer = setTimeout(tick, POLL_MS);
        });
    };
    tick();
  }

  protected async onStop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#abort.abort(new Error('restore ended'));
    await Promise.allSettled(this.#ahead.values());
    if (!this.dir) return;
    // unlink never follows a link; no recursion into what the server's user could have made
    await unlink(join(this.dataDir, PREFETCH_POINTER)).catch(() => undefined);
    await rm(this.#out, { recursive: true, force: true }).catch(() => undefined);
    for (const entry of await readdir(this.#in).catch(() => [] as string[]))
      await unlink(join(this.#in, entry)).catch(() => undefined);
    await rmdir(this.#in).catch(() => undefined);
    await rmdir(this.dir).catch((err: unknown) =>
      this.logger.warn(
        { job: 'pitr-restore', dir: this.dir, err: { message: errorMessage(err) } },
        'cannot remove the WAL exchange directory',
      ),
    );
  }

  async #scan(): Promise<void> {
    // in/ must still be the directory made for the server's user, not something put in its place
    const st = await lstat(this.#in).catch(() => undefined);
    const uid = this.owner?.uid ?? process.getuid?.();
    if (!st?.isDirectory() || (uid !== undefined && st.uid !== uid)) return;
    for (const entry of await readdir(this.#in)) {
      const taken = TAKEN_RE.exec(entry);
      if (taken) {
        // wal-fetch copied a file: count it, free its space, and fetch further ahead
        const name = taken[1]!;
        await unlink(join(this.#in, entry)).catch(() => undefined);
        await unlink(join(this.#out, name)).catch(() => undefined);
        this.fetched++;
        this.#prefetchAfter(name);
        continue;
      }
      const want = WANT_RE.exec(entry);
      if (!want || this.#busy.has(entry)) continue;
      const [, name, id] = want;
      if (!parseWalFileName(name!, this.segmentBytes)) continue;
      this.#busy.add(entry);
      void this.#answer(name!, id!, entry).finally(() => this.#busy.delete(entry));
    }
  }

  async #answer(name: string, id: string, request: string): Promise<void> {
    try {
      await this.#ahead.get(name);
      if (!existsSync(join(this.#out, name))) {
        const r = await resolveWal(this.ws, name, this.#abort.signal, this.segmentBytes);
        if (r.kind === 'missing') await this.#write(`${name}.${id}.missing`, Buffer.from(`${r.why}\n`));
        else await this.#write(name, r.content);
      }
    } catch (err) {
      await this.#write(`${name}.${id}.error`, Buffer.from(errorMessage(err).slice(0, 4000)));
    }
    await unlink(join(this.#in, request)).catch(() => undefined);
  }

  /** Fetches the segments after `name` on its timeline, so the next requests find them ready. */
  #prefetchAfter(name: string): void {
    const p = parseWalFileName(name, this.segmentBytes);
    if (p?.kind !== 'segment') return;
    for (let i = 1n; i <= BigInt(AHEAD); i++) {
      const next = segmentName(p.timeline, p.segNo + i, this.segmentBytes);
      if (this.#ahead.has(next) || existsSync(join(this.#out, next))) continue;
      const job = resolveWal(this.ws, next, this.#abort.signal, this.segmentBytes)
        .then(async (r) => {
          // a partial stands in only when asked for: fetched ahead, it could hide the finished
          // segment stored meanwhile
          if (r.kind === 'found' && !r.from.includes('.partial.') && !existsSync(join(this.#out, next)))
            await this.#write(next, r.content);
        })
        // a failure ahead is found again, and reported, when the server asks for the file
        .catch(() => undefined);
      this.#ahead.set(next, job);
      void job.finally(() => setTimeout(() => this.#ahead.delete(next), 60_000).unref());
    }
  }

  /** A new file in out/ (only this process writes there), readable by the server's group. */
  async #write(file: string, content: Buffer): Promise<void> {
    const tmp = join(this.#out, `.${randomBytes(8).toString('hex')}.tmp`);
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(content);
        if (this.owner) {
          await fh.chown(process.getuid?.() ?? 0, this.owner.gid);
          await fh.chmod(0o640);
        }
      } finally {
        await fh.close();
      }
      await rename(tmp, join(this.#out, file));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}
