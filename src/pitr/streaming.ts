/**
 * One stretch of streaming while this replica leads: pg_receivewal into the spool through the slot,
 * the server's position sampled every second (the lag, the slot's state), and the chain watched as
 * files reach the store. A break in the chain (the slot dropped or invalidated, WAL the server
 * removed before it was read, a stored segment that does not follow the last one) is logged,
 * counted, the slot made again, streaming restarted from the server's current position, and
 * reported through onGap: only a new base backup makes the time after it restorable.
 */
import type { Config } from '../config/load.js';
import { errorMessage } from '../core/errors.js';
import { sameSystem } from '../db/cluster.js';
import type { DbPool } from '../db/pool.js';
import type { Logger } from '../log/logger.js';
import { libpqEnv } from '../programs/client-tools.js';
import type { ArchiveLag } from './archive-lag.js';
import type { PitrMetrics } from './metrics.js';
import { receivewalPath, WalReceiver, type ReceiverLaunch } from './receiver.js';
import { dropLostSlot, ensureSlot, serverFacts, serverPosition, slotState } from './slot.js';
import type { SpoolUploader, StoredEvent } from './spool-uploader.js';
import { readStoredPosition } from './stored-position.js';
import type { WalStore } from './wal-object.js';
import { sleep } from './sleep.js';

const MONITOR_MS = 1000;

export interface WalStreamOptions {
  config: Config;
  pool: DbPool;
  uploader: SpoolUploader;
  target: { ws: WalStore; segmentBytes: number };
  lag: ArchiveLag;
  logger: Logger;
  metrics?: PitrMetrics | undefined;
  onGap: (reason: string) => void;
  onNewTimeline: (timeline: number) => void;
}

export class WalStream {
  readonly #o: WalStreamOptions;
  readonly #log: Logger;
  #receiver: WalReceiver | undefined;
  /** The newest finished segment stored, by timeline: the next one must follow it. */
  #lastSegment = new Map<number, bigint>();
  #newestTimeline = 0;
  /** The server (user@host:port/db) our slot was last seen on: a slot missing there was dropped. */
  #slotOn: string | undefined;
  #pendingGap: string | undefined;

  constructor(o: WalStreamOptions) {
    this.#o = o;
    this.#log = o.logger;
  }

  /** pg_receivewal's process id while it runs. */
  get receiverPid(): number | undefined {
    return this.#receiver?.pid;
  }

  async run(signal: AbortSignal, major: number): Promise<void> {
    const t = this.#o.target;
    // a store that is down must not keep WAL from streaming into the spool: without its picture
    // the first segment is not checked against the stored ones, and the lag is known after an upload
    const stored = await readStoredPosition(t.ws, t.segmentBytes).catch((err: unknown) => {
      this.#log.warn(
        { err: { message: errorMessage(err) } },
        'cannot read what the store holds; streaming into the spool anyway',
      );
      return undefined;
    });
    this.#lastSegment = stored?.lastSegment ?? new Map();
    this.#newestTimeline = stored?.newestTimeline ?? 0;
    this.#o.lag.reset(stored?.end);
    this.#slotOn = undefined;
    this.#pendingGap = undefined;
    await this.#retireStale();
    const local = new AbortController();
    const receiver = new WalReceiver({
      spoolDir: this.#o.config.pitr.spoolDir,
      slot: this.#o.config.pitr.slot,
      logger: this.#log,
      prepare: () => this.#prepare(major, signal, local),
      onLine: (line) => this.#receiverSaid(line),
      onRestart: () => this.#o.metrics?.receiverRestarts.inc(),
      onRunning: (running) => this.#o.metrics?.archiverUp.set(running ? 1 : 0),
    });
    this.#receiver = receiver;
    receiver.start();
    const both = AbortSignal.any([signal, local.signal]);
    try {
      while (!both.aborted) {
        await this.#monitor(receiver, local).catch((err: unknown) =>
          this.#log.debug({ err: { message: errorMessage(err) } }, 'sampling the server position failed'),
        );
        await sleep(MONITOR_MS, both);
      }
    } finally {
      await receiver.stop();
      this.#receiver = undefined;
    }
  }

  /**
   * A .partial left in the spool from when this replica last led, whose segment the store now holds
   * finished (another replica streamed on meanwhile): pg_receivewal would start from it and ask
   * for WAL the server may have removed. The store being down must not keep streaming from starting.
   */
  async #retireStale(): Promise<void> {
    try {
      const retired = await this.#o.uploader.retirePartials((f) => {
        if (f.kind !== 'segment') return false;
        const last = this.#lastSegment.get(f.timeline);
        return last !== undefined && last >= f.segNo;
      });
      if (retired) this.#log.info({ retired }, 'stale partial segments stored and removed from the spool');
    } catch (err) {
      this.#log.warn(
        { err: { message: errorMessage(err) } },
        'could not store the spool before streaming; pg_receivewal starts from it',
      );
    }
  }

  /**
   * Every second: the server's position (for the lag), the slot's state (a gap when it is gone), and
   * that the server is still this cluster: when DATABASE_URL_FILE comes to name another one, the
   * stretch ends (the heartbeat and slot check that in their own statements meanwhile).
   */
  async #monitor(receiver: WalReceiver, local: AbortController): Promise<void> {
    const slot = this.#o.config.pitr.slot;
    const p = await serverPosition(this.#o.pool, slot);
    if (!sameSystem(p.sysid, this.#o.target.ws.sysid)) {
      local.abort();
      return;
    }
    this.#o.lag.sample(p.lsn, p.at);
    const m = this.#o.metrics;
    const lag = this.#o.lag.lag(Date.now());
    if (m && lag) {
      m.lagBytes.set(lag.bytes);
      m.lagSeconds.set(lag.seconds);
    }
    if (p.slot.retainedBytes !== undefined) m?.slotRetainedBytes.set(p.slot.retainedBytes);
    if (this.#pendingGap) return;
    if (this.#slotOn === this.#o.pool.description && !p.slot.exists)
      this.#pendingGap = `the replication slot ${slot} was dropped`;
    else if (p.slot.walStatus === 'lost')
      this.#pendingGap = `the replication slot ${slot} was invalidated (wal_status lost: max_slot_wal_keep_size was exceeded)`;
    if (this.#pendingGap) receiver.restartNow();
  }

  /** Before each start of pg_receivewal: the server is still a primary, the slot is there, a gap is handled. */
  async #prepare(
    major: number,
    signal: AbortSignal,
    local: AbortController,
  ): Promise<ReceiverLaunch | undefined> {
    if (signal.aborted) return undefined;
    const pool = this.#o.pool;
    const facts = await serverFacts(pool);
    if (facts.standby || !sameSystem(facts.sysid, this.#o.target.ws.sysid)) {
      // DATABASE_URL_FILE now names a standby (the old primary after a failover), or another cluster
      // (the archiver says so and streams no more): stop and try again
      local.abort();
      return undefined;
    }
    const slot = this.#o.config.pitr.slot;
    const st = await slotState(pool, slot);
    const gap =
      this.#pendingGap ??
      // on another server (DATABASE_URL_FILE moved after a failover) a missing slot is a new one to
      // make; pg_receivewal then says whether the WAL it needs is still there
      (this.#slotOn === pool.description && !st.exists
        ? `the replication slot ${slot} was dropped`
        : undefined) ??
      (st.walStatus === 'lost'
        ? `the replication slot ${slot} was invalidated (wal_status lost)`
        : undefined);
    if (gap) await this.#gap(gap, st.walStatus === 'lost');
    else if (await ensureSlot(pool, slot, this.#o.target.ws.sysid))
      this.#log.info({ slot }, 'replication slot created');
    this.#slotOn = pool.description;
    // pg_receivewal starts from the newest WAL file in the spool: none of another cluster's may be there
    const foreign = await this.#o.uploader.rejectForeign();
    if (foreign.length)
      this.#log.error(
        { files: foreign.length, spoolDir: this.#o.config.pitr.spoolDir },
        "WAL_SPOOL_DIR held files that are not this cluster's WAL: set aside before pg_receivewal starts",
      );
    const torn = await this.#o.uploader.removeTornPartials();
    if (torn.length)
      this.#log.warn(
        { files: torn },
        'removed a partial segment pg_receivewal left half-created (it was stopped while making it); it streams that segment again',
      );
    const env = libpqEnv(pool.target, this.#o.config.db.ssl, { clientMajor: facts.major });
    env.PGAPPNAME = 'pg-maintd-walreceiver';
    return { path: receivewalPath(this.#o.config.backup.clientBinDir, Math.max(major, facts.major)), env };
  }

  /** A break in the chain: a new slot from now, the stale spool stored and emptied, onGap. */
  async #gap(reason: string, lost: boolean): Promise<void> {
    const slot = this.#o.config.pitr.slot;
    if (!this.#pendingGap || this.#pendingGap !== reason) this.#pendingGap = reason;
    this.#log.error(
      {
        slot,
        why: reason,
        fix: 'a new base backup is taken; set max_slot_wal_keep_size high enough and let no one drop the slot',
      },
      `WAL archive gap: ${reason}; streaming starts again from the server's current position`,
    );
    // reserve WAL from now before anything else: the store may be down for a while
    if (lost) await dropLostSlot(this.#o.pool, slot);
    await ensureSlot(this.#o.pool, slot, this.#o.target.ws.sysid);
    // the spool's files are stored before they go: pg_receivewal would start from them otherwise
    await this.#o.uploader.pass();
    await this.#o.uploader.retirePartials();
    this.#pendingGap = undefined;
    this.#lastSegment.clear();
    this.#o.lag.reset();
    this.#o.metrics?.gaps.inc();
    this.#o.onGap(reason);
  }

  #receiverSaid(line: string): void {
    if (/requested WAL segment .* has already been removed/i.test(line) && !this.#pendingGap)
      this.#pendingGap = `the server removed WAL pg_receivewal had not read (${line})`;
    else if (/no space left on device/i.test(line))
      this.#log.error(
        {
          spoolDir: this.#o.config.pitr.spoolDir,
          fix: 'free space on the volume of WAL_SPOOL_DIR or give it a larger one; check the store is reachable (the spool grows while uploads fail)',
        },
        'WAL_SPOOL_DIR is full: pg_receivewal cannot write; the slot keeps WAL on the server meanwhile',
      );
  }

  /** After each file reaches the store: the lag, the chain's continuity, new timelines. */
  stored(e: StoredEvent): void {
    if (e.end !== undefined) this.#o.lag.storedUpTo(e.end);
    const { file } = e;
    if (file.kind === 'history') {
      if (file.timeline > this.#newestTimeline && e.fresh) {
        this.#newestTimeline = file.timeline;
        this.#log.info({ timeline: file.timeline }, 'a new timeline began (failover or promotion)');
        this.#o.onNewTimeline(file.timeline);
      }
      return;
    }
    if (e.kind !== 'segment') return;
    const last = this.#lastSegment.get(file.timeline);
    if (last !== undefined && file.segNo > last + 1n) {
      const reason = `segment ${file.name} does not follow the last one stored on timeline ${file.timeline} (${last + 1n} expected, ${file.segNo} came)`;
      this.#log.error({ why: reason, fix: 'a new base backup is taken' }, `WAL archive gap: ${reason}`);
      this.#o.metrics?.gaps.inc();
      this.#o.onGap(reason);
    }
    if (last === undefined || file.segNo > last) this.#lastSegment.set(file.timeline, file.segNo);
    if (file.timeline > this.#newestTimeline) this.#newestTimeline = file.timeline;
  }
}
