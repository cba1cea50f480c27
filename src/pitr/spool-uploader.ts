/**
 * Moves WAL from WAL_SPOOL_DIR to the store. Every finished segment (24 hex digits, no suffix) and
 * every timeline history file is stored in name order (timeline, then position; a history file
 * sorts before its timeline's first segment) and removed from the spool only once the store has
 * confirmed it, then the folder is fsynced. The segment being written (`.partial`) is stored every
 * WAL_PARTIAL_UPLOAD_INTERVAL when it holds more WAL than the copy stored last; it is read while
 * pg_receivewal writes it, which is fine: what it holds is measured from the bytes read.
 * A store that fails is retried with backoff and nothing leaves the spool meanwhile: it grows.
 * A segment whose first page says it is another cluster's, or another segment's, is never stored:
 * it is renamed aside in the spool (`<name>.rejected-...`) and said (a spool reused from another cluster).
 */
import { readdir, stat, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { errorMessage } from '../core/errors.js';
import type { PitrMetrics, WalUploadKind } from './metrics.js';
import { writtenBytes } from './pg-control.js';
import { putPartial, putWalFile, WalConflictError, type WalStore } from './wal-object.js';
import { fsyncDir, MAX_HISTORY_BYTES, moveAside, readSpoolFile, readSpoolHead } from './spool-files.js';
import { foreignSegment, LONG_PAGE_HEADER_BYTES } from './wal-header.js';
import { parseWalFileName, segmentStart, type WalFileName } from './wal-name.js';

const PARTIAL_RE = /^([0-9A-F]{24})\.partial$/;
/** What pg_receivewal --compress writes, and starts streaming from when it finds it. */
const COMPRESSED_RE = /^[0-9A-F]{24}\.(gz|lz4|zst)(\.partial)?$/;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;

export interface StoredEvent {
  kind: WalUploadKind;
  file: WalFileName;
  /** Where the WAL stored ends: a segment's end, a partial's last byte; undefined for history files. */
  end: bigint | undefined;
  /** Stored now, not found already there. */
  fresh: boolean;
}

export interface SpoolUploaderOptions {
  spoolDir: string;
  partialIntervalMs: number;
  pollMs?: number;
  logger: Logger;
  metrics?: PitrMetrics | undefined;
  /** The store and the segment size, once known (the cluster's system identifier comes from SQL). */
  target: () => { ws: WalStore; segmentBytes: number } | undefined;
  /** Called after each file is stored, before the next. */
  onStored?: (e: StoredEvent) => void;
}

export class SpoolUploader {
  #loop: Promise<void> | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  #failures = 0;
  #retryAt = 0;
  #lastPartialAt = 0;
  /** Bytes of WAL of the newest stored copy of each partial segment. */
  readonly #partialStored = new Map<string, number>();
  #waiting = 0;
  #swept = false;
  #ticking: Promise<void> | undefined;

  constructor(private readonly o: SpoolUploaderOptions) {}

  start(): void {
    this.#loop ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
  }

  /** Finished files still in the spool after the last look. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Runs one pass now (outside the poll), also when the loop is not started; throws on failure. */
  async pass(opts: { partial?: boolean } = {}): Promise<void> {
    await this.#ticking;
    const run = this.#tick(opts.partial ?? false, true);
    this.#ticking = run.catch(() => undefined);
    await run;
  }

  /**
   * Stores the .partial files as they are now and removes them from the spool: after a gap, or when
   * the store already holds their segment finished (another replica streamed it meanwhile), they
   * are stale, and pg_receivewal would start from them. `which` picks the ones to retire (all).
   */
  async retirePartials(which: (segment: WalFileName) => boolean = () => true): Promise<number> {
    await this.pass({ partial: true });
    let retired = 0;
    for (const name of await this.#names()) {
      const m = PARTIAL_RE.exec(name);
      const file = m ? parseWalFileName(m[1]!, this.o.target()?.segmentBytes) : undefined;
      if (!file || !which(file)) continue;
      await unlink(join(this.o.spoolDir, name)).catch(() => undefined);
      retired++;
    }
    if (retired) await fsyncDir(this.o.spoolDir);
    return retired;
  }

  /**
   * A .partial of a size pg_receivewal refuses (neither 0 nor a segment): it was killed while
   * filling a new segment file with zeros, and would refuse to start for ever. The file is stored
   * first if it holds any WAL, then removed: pg_receivewal starts again at the beginning of the
   * segment the slot still holds, so nothing is lost. The names removed.
   */
  async removeTornPartials(): Promise<string[]> {
    const t = this.o.target();
    if (!t) return [];
    const removed: string[] = [];
    for (const name of await this.#names()) {
      const m = PARTIAL_RE.exec(name);
      if (!m) continue;
      const path = join(this.o.spoolDir, name);
      const info = await stat(path).catch(() => undefined);
      if (!info || info.size === 0 || info.size === t.segmentBytes) continue;
      const content = await readSpoolFile(path, t.segmentBytes);
      const valid = writtenBytes(content);
      const file = parseWalFileName(m[1]!, t.segmentBytes);
      if (file?.kind === 'segment' && (await this.#rejected(name, content, file, t, false))) continue;
      if (valid > 0 && file?.kind === 'segment') {
        const r = await putPartial({ ...t.ws, segmentBytes: t.segmentBytes }, m[1]!, content, valid);
        this.#count('partial', r.compressedBytes);
      }
      await unlink(path);
      removed.push(name);
    }
    if (removed.length) await fsyncDir(this.o.spoolDir);
    return removed;
  }

  /**
   * Before pg_receivewal starts: every segment and .partial in the spool that is not this cluster's
   * is renamed aside (pg_receivewal would start streaming from where they end), and so is every
   * compressed one (pg-maintd never has pg_receivewal compress, and it starts from those too). When
   * one named another cluster, the spool was that cluster's too, and its timeline history files,
   * which say nothing of their cluster, go as well: pg_receivewal fetches the current timeline's
   * again. The names moved.
   */
  async rejectForeign(): Promise<string[]> {
    const t = this.o.target();
    if (!t) return [];
    const moved: string[] = [];
    let otherCluster = false;
    for (const name of (await this.#names()).sort()) {
      if (COMPRESSED_RE.test(name)) {
        if (await this.#setAside(name, 'pg-maintd never has pg_receivewal compress: it is not its file'))
          moved.push(name);
        continue;
      }
      const m = PARTIAL_RE.exec(name);
      const file = parseWalFileName(m ? m[1]! : name, t.segmentBytes);
      if (file?.kind !== 'segment') continue;
      let head: Buffer;
      try {
        head = await readSpoolHead(join(this.o.spoolDir, name), LONG_PAGE_HEADER_BYTES);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const foreign = foreignSegment(head, file, { ...this.#facts(t), finished: !m, whole: false });
      if (!foreign) continue;
      otherCluster ||= foreign.otherCluster;
      if (await this.#setAside(name, foreign.why)) moved.push(name);
    }
    if (otherCluster)
      for (const name of await this.#names()) {
        if (parseWalFileName(name)?.kind !== 'history') continue;
        if (!(await moveAside(this.o.spoolDir, name))) continue;
        moved.push(name);
        this.o.logger.warn(
          { file: name, spoolDir: this.o.spoolDir },
          "timeline history file set aside with the other cluster's WAL: it cannot be told whose it is",
        );
      }
    return moved;
  }

  #facts(t: { ws: WalStore; segmentBytes: number }): { sysid: string; segmentBytes: number } {
    return { sysid: t.ws.sysid, segmentBytes: t.segmentBytes };
  }

  /** Whether the segment file `name`, read whole, was not this cluster's and has been set aside. */
  async #rejected(
    name: string,
    content: Buffer,
    file: Extract<WalFileName, { kind: 'segment' }>,
    t: { ws: WalStore; segmentBytes: number },
    finished: boolean,
  ): Promise<boolean> {
    const foreign = foreignSegment(content, file, { ...this.#facts(t), finished, whole: true });
    if (!foreign) return false;
    await this.#setAside(name, foreign.why);
    return true;
  }

  /** Renames `name` aside, counts and says it; false when it was gone already. */
  async #setAside(name: string, why: string): Promise<boolean> {
    const to = await moveAside(this.o.spoolDir, name);
    if (!to) return false;
    this.o.metrics?.spoolRejected.inc();
    this.o.logger.error(
      {
        file: name,
        movedTo: to,
        why,
        fix: 'give each cluster its own WAL_SPOOL_DIR; delete the files set aside once you know whose they are',
      },
      `a file in WAL_SPOOL_DIR is not this cluster's WAL (${why}): set aside, never stored`,
    );
    return true;
  }

  async #run(): Promise<void> {
    const poll = this.o.pollMs ?? 1000;
    while (!this.#stopping) {
      if (Date.now() >= this.#retryAt) {
        const due = Date.now() - this.#lastPartialAt >= this.o.partialIntervalMs;
        await this.#ticking;
        const run = this.#tick(due, false);
        this.#ticking = run.catch(() => undefined);
        await this.#ticking;
      }
      await this.#sleep(poll);
    }
  }

  async #tick(partials: boolean, rethrow: boolean): Promise<void> {
    await this.#measure();
    const t = this.o.target();
    if (!t) return;
    try {
      // before anything is stored: a spool of another cluster holds history files too
      if (!this.#swept) {
        await this.rejectForeign();
        this.#swept = true;
      }
      const names = await this.#names();
      const finished = names.filter((n) => parseWalFileName(n, t.segmentBytes)).sort();
      for (const name of finished) {
        if (this.#stopping && !rethrow) return;
        await this.#storeFinished(t.ws, t.segmentBytes, name);
      }
      if (partials) {
        this.#lastPartialAt = Date.now();
        const partial = names.filter((n) => PARTIAL_RE.test(n)).sort();
        for (const name of partial) await this.#storePartial(t.ws, t.segmentBytes, name);
      }
      this.#failures = 0;
      this.#retryAt = 0;
    } catch (err) {
      this.#failed(err);
      if (rethrow) throw err;
    } finally {
      await this.#measure();
    }
  }

  async #storeFinished(ws: WalStore, segmentBytes: number, name: string): Promise<void> {
    const path = join(this.o.spoolDir, name);
    const file = parseWalFileName(name, segmentBytes)!;
    const content = await readSpoolFile(path, file.kind === 'segment' ? segmentBytes : MAX_HISTORY_BYTES);
    if (file.kind === 'segment' && content.length !== segmentBytes) {
      // pg_receivewal renames a segment only once it is whole: a short one was not written by it
      throw new Error(`${path} has ${content.length} bytes, not the segment size ${segmentBytes}`);
    }
    if (file.kind === 'segment' && (await this.#rejected(name, content, file, { ws, segmentBytes }, true)))
      return;
    const r = await putWalFile({ ...ws, segmentBytes }, name, content);
    const kind: WalUploadKind = file.kind === 'segment' ? 'segment' : 'history';
    this.#count(kind, r.compressedBytes);
    this.o.logger.debug({ file: name, stored: r.stored, key: r.key }, 'WAL file stored');
    await unlink(path);
    await fsyncDir(this.o.spoolDir);
    const end =
      file.kind === 'segment' ? segmentStart(file.segNo, segmentBytes) + BigInt(segmentBytes) : undefined;
    this.o.onStored?.({ kind, file, end, fresh: r.stored === 'new' });
  }

  async #storePartial(ws: WalStore, segmentBytes: number, name: string): Promise<void> {
    const segment = PARTIAL_RE.exec(name)![1]!;
    const file = parseWalFileName(segment, segmentBytes);
    if (file?.kind !== 'segment') return;
    let content: Buffer;
    try {
      content = await readSpoolFile(join(this.o.spoolDir, name), segmentBytes);
    } catch (err) {
      // renamed to its finished name meanwhile: the next pass stores that
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    if (await this.#rejected(name, content, file, { ws, segmentBytes }, false)) return;
    const valid = writtenBytes(content);
    if (valid === 0 || valid <= (this.#partialStored.get(segment) ?? 0)) return;
    const r = await putPartial({ ...ws, segmentBytes }, segment, content, valid);
    this.#partialStored.set(segment, valid);
    // only the newest few matter; the map must not grow for ever
    if (this.#partialStored.size > 8) this.#partialStored.delete(this.#partialStored.keys().next().value!);
    this.#count('partial', r.compressedBytes);
    this.o.onStored?.({
      kind: 'partial',
      file,
      end: segmentStart(file.segNo, segmentBytes) + BigInt(valid),
      fresh: r.stored === 'new',
    });
  }

  #count(kind: WalUploadKind, bytes: number): void {
    const m = this.o.metrics;
    if (!m) return;
    m.uploaded.inc({ kind });
    m.uploadedBytes.inc({ kind }, bytes);
    m.lastUpload.set(Date.now() / 1000);
  }

  #failed(err: unknown): void {
    this.#failures++;
    this.o.metrics?.uploadFailures.inc();
    const delay = Math.min(BACKOFF_MIN_MS * 2 ** (this.#failures - 1), BACKOFF_MAX_MS);
    this.#retryAt = Date.now() + delay;
    if (err instanceof WalConflictError) {
      this.o.logger.error(
        { hint: err.hint, retryInMs: delay },
        `WAL archiving is blocked: ${err.message}; the file stays in the spool`,
      );
      return;
    }
    // said at the first failure and then every tenth, so a long outage does not flood the log
    if (this.#failures === 1 || this.#failures % 10 === 0)
      this.o.logger.warn(
        { err: { message: errorMessage(err) }, failures: this.#failures, retryInMs: delay },
        'storing WAL failed; it stays in WAL_SPOOL_DIR and is retried',
      );
  }

  async #names(): Promise<string[]> {
    try {
      return await readdir(this.o.spoolDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  /** The spool's gauges: finished files waiting, their bytes, the file system's free bytes. */
  async #measure(): Promise<void> {
    let files = 0;
    let bytes = 0;
    for (const name of await this.#names().catch(() => [])) {
      if (!parseWalFileName(name)) continue;
      const s = await stat(join(this.o.spoolDir, name)).catch(() => undefined);
      if (!s) continue;
      files++;
      bytes += s.size;
    }
    this.#waiting = files;
    const m = this.o.metrics;
    if (!m) return;
    m.spoolFiles.set(files);
    m.spoolBytes.set(bytes);
    const fs = await statfs(this.o.spoolDir).catch(() => undefined);
    if (fs) m.spoolFreeBytes.set(Number(fs.bavail) * Number(fs.bsize));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.#wake = done;
    });
  }
}
