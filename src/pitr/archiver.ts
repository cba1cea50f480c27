/**
 * The continuous WAL archiver of `WAL_ARCHIVE=stream`: the replica that holds the lease `wal-archive`
 * runs pg_receivewal through pg-maintd's slot into WAL_SPOOL_DIR, and writes the PITR heartbeat;
 * the others try for the lease every few seconds and take over once the leader is gone. Every
 * replica uploads what its own spool holds (WAL already acknowledged to the server must reach the
 * store whoever leads). A standby server is never streamed from (said once).
 * A break in the chain (the slot dropped or invalidated, WAL the server removed before it was read,
 * a stored segment that does not follow the last one) is logged, counted, the slot made again,
 * streaming restarted from the server's current position, and `onGap` called: only a new base
 * backup makes the time after it restorable. In `command` mode only the heartbeat runs here.
 */
import { mkdir } from 'node:fs/promises';
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import type { Config } from '../config/load.js';
import { errorMessage } from '../core/errors.js';
import { systemIdentifier } from '../db/cluster.js';
import { acquireLease, LEASE_SESSION } from '../db/lease.js';
import { ensureLeaseTable } from '../db/lease-table.js';
import { DbPool } from '../db/pool.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { libpqEnv } from '../programs/client-tools.js';
import { ArchiveLag } from './archive-lag.js';
import { Heartbeat } from './heartbeat.js';
import type { PitrMetrics } from './metrics.js';
import { receivewalPath, WalReceiver, type ReceiverLaunch } from './receiver.js';
import { dropLostSlot, ensureSlot, serverFacts, serverPosition, slotState, walSegmentBytes } from './slot.js';
import { SpoolUploader, type StoredEvent } from './spool-uploader.js';
import { readStoredPosition } from './stored-position.js';
import type { WalStore } from './wal-object.js';

export const WAL_ARCHIVE_LEASE = 'wal-archive';
const MONITOR_MS = 1000;

export interface WalArchiverOptions {
  config: Config;
  storage: Storage;
  signer?: Signer | undefined;
  logger: Logger;
  metrics?: PitrMetrics | undefined;
  /** The WAL chain broke: the time after it is restorable only from a new base backup. */
  onGap?: (reason: string) => void;
  /** A new timeline's history file was stored (a failover or promotion). */
  onNewTimeline?: (timeline: number) => void;
}

export class WalArchiver extends Service {
  readonly name = 'wal-archiver';
  readonly #o: WalArchiverOptions;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  readonly #pool: DbPool;
  readonly #stream: boolean;
  readonly lag = new ArchiveLag();
  /** Called when the chain breaks (set by whoever takes base backups; the option's is the default). */
  onGap: ((reason: string) => void) | undefined;
  /** Called when a new timeline's history file was stored. */
  onNewTimeline: ((timeline: number) => void) | undefined;
  readonly uploader: SpoolUploader | undefined;
  #main: Promise<void> | undefined;
  #target: { ws: WalStore; segmentBytes: number } | undefined;
  #receiver: WalReceiver | undefined;
  #leading = false;
  #said = '';
  // chain state while leading
  #lastSegment = new Map<number, bigint>();
  #newestTimeline = 0;
  /** The server (user@host:port/db) our slot was last seen on: a slot missing there was dropped. */
  #slotOn: string | undefined;
  #pendingGap: string | undefined;

  constructor(o: WalArchiverOptions) {
    super();
    this.#o = o;
    this.onGap = o.onGap;
    this.onNewTimeline = o.onNewTimeline;
    this.#log = o.logger.child({ job: 'wal-archive' });
    this.#stream = o.config.pitr.archive === 'stream';
    this.#pool = new DbPool(o.config.db, {
      name: 'wal-archive',
      applicationName: 'pg-maintd-walarchive',
      logger: o.logger,
      max: 2,
      min: 0,
      ...LEASE_SESSION,
    });
    if (this.#stream)
      this.uploader = new SpoolUploader({
        spoolDir: o.config.pitr.spoolDir,
        partialIntervalMs: o.config.pitr.partialUploadIntervalMs,
        logger: this.#log,
        metrics: o.metrics,
        target: () => this.#target,
        onStored: (e) => this.#stored(e),
      });
  }

  /** Whether this replica leads the archiving now. */
  get leading(): boolean {
    return this.#leading;
  }

  /** pg_receivewal's process id while it runs. */
  get receiverPid(): number | undefined {
    return this.#receiver?.pid;
  }

  protected async onStart(): Promise<void> {
    this.#o.metrics?.archiverUp.set(0);
    if (this.#stream) await mkdir(this.#o.config.pitr.spoolDir, { recursive: true, mode: 0o700 });
    this.#main = this.#run();
  }

  protected async onStop(): Promise<void> {
    this.#abort.abort();
    await this.#main;
    await this.uploader?.stop();
    await this.#pool.stop();
    this.#o.metrics?.archiverUp.set(0);
  }

  async #run(): Promise<void> {
    const ttl = this.#o.config.leases.ttlMs;
    const retryMs = Math.max(200, Math.min(ttl / 3, 5000));
    while (!this.#abort.signal.aborted) {
      try {
        await this.#attempt();
      } catch (err) {
        this.#sayOnce(`failed: ${errorMessage(err)}`, 'warn', 'WAL archiving: a step failed; trying again', {
          err: { message: errorMessage(err) },
        });
      }
      await sleep(retryMs, this.#abort.signal);
    }
  }

  /** One try to lead: read the cluster, take the lease, lead until it is lost or we stop. */
  async #attempt(): Promise<void> {
    const facts = await serverFacts(this.#pool);
    if (this.#stream && !this.#target) {
      const sysid = await systemIdentifier(this.#pool);
      const segmentBytes = await walSegmentBytes(this.#pool);
      this.#target = { ws: { storage: this.#o.storage, sysid, signer: this.#o.signer }, segmentBytes };
      this.uploader!.start();
    }
    if (facts.standby) {
      this.#sayOnce('standby', 'info', 'WAL archiving waits: the database of DATABASE_URL is a standby', {
        why: 'pg_receivewal streams from the primary, where the slot keeps WAL for it',
      });
      return;
    }
    const problem = await ensureLeaseTable(this.#pool);
    if (problem) {
      this.#sayOnce(
        `lease:${problem.problem}`,
        'error',
        `WAL archiving cannot elect a leader: ${problem.problem}`,
        {
          fix: problem.fix,
        },
      );
      return;
    }
    const got = await acquireLease(this.#pool, WAL_ARCHIVE_LEASE, {
      ttlMs: this.#o.config.leases.ttlMs,
      logger: this.#log,
    });
    if ('heldBy' in got) {
      this.#sayOnce(`held:${got.heldBy.holder}`, 'info', 'WAL archiving: another pg-maintd leads', {
        holder: got.heldBy.holder,
      });
      return;
    }
    this.#said = '';
    const lease = got.lease;
    const signal = AbortSignal.any([lease.signal, this.#abort.signal]);
    this.#leading = true;
    try {
      await this.#lead(signal, facts.major);
    } finally {
      this.#leading = false;
      this.#o.metrics?.archiverUp.set(0);
      await lease.release();
    }
  }

  async #lead(signal: AbortSignal, major: number): Promise<void> {
    this.#log.info({ mode: this.#o.config.pitr.archive }, 'leading WAL archiving');
    const heartbeat = new Heartbeat({
      pool: this.#pool,
      intervalMs: this.#o.config.pitr.heartbeatIntervalMs,
      logger: this.#log,
      metrics: this.#o.metrics,
    });
    heartbeat.start();
    try {
      if (!this.#stream) {
        this.#o.metrics?.archiverUp.set(1);
        await sleep(Number.MAX_SAFE_INTEGER, signal);
        return;
      }
      await this.#stream_(signal, major);
    } finally {
      await heartbeat.stop();
    }
  }

  async #stream_(signal: AbortSignal, major: number): Promise<void> {
    const t = this.#target!;
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
    this.lag.reset(stored?.end);
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
        await this.#monitor(receiver).catch((err: unknown) =>
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
      const retired = await this.uploader!.retirePartials((f) => {
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

  /** Every second: the server's position (for the lag), the slot's state (a gap when it is gone). */
  async #monitor(receiver: WalReceiver): Promise<void> {
    const slot = this.#o.config.pitr.slot;
    const p = await serverPosition(this.#pool, slot);
    this.lag.sample(p.lsn, p.at);
    const m = this.#o.metrics;
    const lag = this.lag.lag(Date.now());
    if (m && lag) {
      m.lagBytes.set(lag.bytes);
      m.lagSeconds.set(lag.seconds);
    }
    if (p.slot.retainedBytes !== undefined) m?.slotRetainedBytes.set(p.slot.retainedBytes);
    if (this.#pendingGap) return;
    if (this.#slotOn === this.#pool.description && !p.slot.exists)
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
    const pool = this.#pool;
    const facts = await serverFacts(pool);
    if (facts.standby) {
      // DATABASE_URL_FILE now names a standby (the old primary after a failover): stop and try again
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
    else if (await ensureSlot(pool, slot)) this.#log.info({ slot }, 'replication slot created');
    this.#slotOn = pool.description;
    const torn = await this.uploader!.removeTornPartials();
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
    if (lost) await dropLostSlot(this.#pool, slot);
    await ensureSlot(this.#pool, slot);
    // the spool's files are stored before they go: pg_receivewal would start from them otherwise
    await this.uploader!.pass();
    await this.uploader!.retirePartials();
    this.#pendingGap = undefined;
    this.#lastSegment.clear();
    this.lag.reset();
    this.#o.metrics?.gaps.inc();
    this.#callback(() => this.onGap?.(reason));
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
  #stored(e: StoredEvent): void {
    if (e.end !== undefined) this.lag.storedUpTo(e.end);
    const { file } = e;
    if (file.kind === 'history') {
      if (file.timeline > this.#newestTimeline && e.fresh) {
        this.#newestTimeline = file.timeline;
        this.#log.info({ timeline: file.timeline }, 'a new timeline began (failover or promotion)');
        this.#callback(() => this.onNewTimeline?.(file.timeline));
      }
      return;
    }
    if (e.kind !== 'segment') return;
    const last = this.#lastSegment.get(file.timeline);
    if (last !== undefined && file.segNo > last + 1n) {
      const reason = `segment ${file.name} does not follow the last one stored on timeline ${file.timeline} (${last + 1n} expected, ${file.segNo} came)`;
      this.#log.error({ why: reason, fix: 'a new base backup is taken' }, `WAL archive gap: ${reason}`);
      this.#o.metrics?.gaps.inc();
      this.#callback(() => this.onGap?.(reason));
    }
    if (last === undefined || file.segNo > last) this.#lastSegment.set(file.timeline, file.segNo);
    if (file.timeline > this.#newestTimeline) this.#newestTimeline = file.timeline;
  }

  #callback(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err: { message: errorMessage(err) } }, 'a WAL archive callback failed');
    }
  }

  /** Says a state once, until another state is said. */
  #sayOnce(state: string, level: 'info' | 'warn' | 'error', msg: string, fields: object): void {
    if (this.#said === state) return;
    this.#said = state;
    this.#log[level](fields, msg);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, Math.min(ms, 2 ** 31 - 1));
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
