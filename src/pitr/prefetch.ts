/**
 * Serving restore_command from pg-maintd's own process while `pitr restore --start` (or a drill)
 * runs: the server's restore_command (`wal-fetch`, run as the server's OS user, which may not be
 * able to read the store or the signing key) leaves a request `<name>.want` in
 * <data>/pg_wal/.pgmaintd-prefetch/; this process answers with the verified file `<name>` (moved
 * into place by wal-fetch without touching the store), `<name>.missing`, or `<name>.error` holding
 * the message that aborts recovery. After each segment it fetches the next few ahead, so replay
 * rarely waits for the store. ACTIVE marks the directory as served; without it wal-fetch reads the
 * store itself.
 */
import { existsSync } from 'node:fs';
import { chown, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { ACTIVE, PREFETCH_DIR, TAKEN_SUFFIX } from './prefetch-client.js';
import { resolveWal, writeAtomically } from './wal-fetch.js';
import type { WalStore } from './wal-object.js';
import { DEFAULT_SEGMENT_BYTES, parseWalFileName, segmentName } from './wal-name.js';

const AHEAD = 4;
const POLL_MS = 50;

export { PREFETCH_DIR };

export interface Owner {
  uid: number;
  gid: number;
}

export class Prefetcher extends Service {
  readonly name = 'wal-prefetch';
  readonly dir: string;
  /** WAL files handed over so far (served from ahead or on request). */
  fetched = 0;
  #timer: NodeJS.Timeout | undefined;
  #busy = new Set<string>();
  #ahead = new Map<string, Promise<void>>();
  #abort = new AbortController();

  constructor(
    dataDir: string,
    private readonly ws: WalStore,
    private readonly logger: Logger,
    private readonly owner: Owner | undefined,
    private readonly segmentBytes = DEFAULT_SEGMENT_BYTES,
  ) {
    super();
    this.dir = join(dataDir, PREFETCH_DIR);
  }

  protected async onStart(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (this.owner) await chown(this.dir, this.owner.uid, this.owner.gid);
    await writeFile(join(this.dir, ACTIVE), `${process.pid}\n`);
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
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  async #scan(): Promise<void> {
    if (!existsSync(this.dir)) return;
    for (const entry of await readdir(this.dir)) {
      if (entry.endsWith(TAKEN_SUFFIX)) {
        // wal-fetch took a file fetched ahead without asking: count it, and fetch further ahead
        const name = entry.slice(0, -TAKEN_SUFFIX.length);
        await rm(join(this.dir, entry), { force: true });
        this.fetched++;
        this.#prefetchAfter(name);
        continue;
      }
      if (!entry.endsWith('.want')) continue;
      const name = entry.slice(0, -'.want'.length);
      if (this.#busy.has(name) || !parseWalFileName(name, this.segmentBytes)) continue;
      this.#busy.add(name);
      void this.#answer(name).finally(() => this.#busy.delete(name));
    }
  }

  async #answer(name: string): Promise<void> {
    const want = join(this.dir, `${name}.want`);
    try {
      await this.#ahead.get(name);
      if (!existsSync(join(this.dir, name))) {
        const r = await resolveWal(this.ws, name, this.#abort.signal);
        if (r.kind === 'missing') {
          await this.#write(`${name}.missing`, Buffer.from(`${r.why}\n`));
          await rm(want, { force: true });
          return;
        }
        await this.#write(name, r.content);
      }
      this.fetched++;
      this.#prefetchAfter(name);
    } catch (err) {
      await this.#write(`${name}.error`, Buffer.from(errorMessage(err).slice(0, 4000)));
    }
    await rm(want, { force: true });
  }

  /** Fetches the segments after `name` on its timeline, so the next requests find them ready. */
  #prefetchAfter(name: string): void {
    const p = parseWalFileName(name, this.segmentBytes);
    if (p?.kind !== 'segment') return;
    for (let i = 1n; i <= BigInt(AHEAD); i++) {
      const next = segmentName(p.timeline, p.segNo + i, this.segmentBytes);
      if (this.#ahead.has(next) || existsSync(join(this.dir, next))) continue;
      const job = resolveWal(this.ws, next, this.#abort.signal)
        .then(async (r) => {
          // a partial stands in only when asked for: fetched ahead, it could hide the finished
          // segment stored meanwhile
          if (r.kind === 'found' && !r.from.includes('.partial.') && !existsSync(join(this.dir, next)))
            await this.#write(next, r.content);
        })
        // a failure ahead is found again, and reported, when the server asks for the file
        .catch(() => undefined);
      this.#ahead.set(next, job);
      void job.finally(() => setTimeout(() => this.#ahead.delete(next), 60_000).unref());
    }
  }

  async #write(file: string, content: Buffer): Promise<void> {
    await writeAtomically(join(this.dir, file), content, this.owner);
  }
}
