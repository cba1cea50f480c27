/**
 * The continuous WAL archiver of `WAL_ARCHIVE=stream`: the replica that holds the lease `wal-archive`
 * runs pg_receivewal through pg-maintd's slot into WAL_SPOOL_DIR, and writes the PITR heartbeat;
 * the others try for the lease every few seconds and take over once the leader is gone. Every
 * replica uploads what its own spool holds (WAL already acknowledged to the server must reach the
 * store whoever leads). A standby server is never streamed from (said once).
 * While leading, streaming.ts runs pg_receivewal and watches the chain; a break in it calls `onGap`
 * (only a new base backup makes the time after it restorable). In `command` mode only the
 * heartbeat runs here.
 */
import { constants } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import { encryptionRecipients } from '../backup/encryption.js';
import type { Config } from '../config/load.js';
import { errorMessage, OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { sameSystem } from '../db/cluster.js';
import { acquireLease, LEASE_SESSION } from '../db/lease.js';
import { ensureLeaseTable } from '../db/lease-table.js';
import { DbPool } from '../db/pool.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { ArchiveLag } from './archive-lag.js';
import { Heartbeat } from './heartbeat.js';
import type { PitrMetrics } from './metrics.js';
import { serverFacts, walSegmentBytes } from './slot.js';
import { sleep } from './sleep.js';
import { SpoolUploader } from './spool-uploader.js';
import { WalStream } from './streaming.js';
import type { WalStore } from './wal-object.js';

export const WAL_ARCHIVE_LEASE = 'wal-archive';

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
  #session: WalStream | undefined;
  #leading = false;
  #said = '';

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
        onStored: (e) => this.#session?.stored(e),
      });
  }

  /** Whether this replica leads the archiving now. */
  get leading(): boolean {
    return this.#leading;
  }

  /** pg_receivewal's process id while it runs. */
  get receiverPid(): number | undefined {
    return this.#session?.receiverPid;
  }

  protected async onStart(): Promise<void> {
    this.#o.metrics?.archiverUp.set(0);
    if (this.#stream) {
      const dir = this.#o.config.pitr.spoolDir;
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await access(dir, constants.W_OK);
      } catch (err) {
        throw new OperatorError(`WAL_SPOOL_DIR ${dir} cannot be used: ${errorMessage(err)}`, {
          exitCode: EXIT.CONFIG,
          hint: 'point WAL_SPOOL_DIR at a writable folder on a persistent volume (pg_receivewal writes WAL there before it is stored)',
          cause: err,
        });
      }
    }
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
      const segmentBytes = await walSegmentBytes(this.#pool);
      const config = this.#o.config;
      this.#target = {
        // the recipients only, read again for every object (a rotation needs no restart); never the identity
        ws: {
          storage: this.#o.storage,
          sysid: facts.sysid,
          signer: this.#o.signer,
          recipients: () => encryptionRecipients(config),
        },
        segmentBytes,
      };
      this.uploader!.start();
    } else if (this.#stream && this.#target) {
      // DATABASE_URL_FILE may come to name another cluster (not a failover: a standby shares the
      // primary's identifier): its WAL must never go under this one's prefix, nor into its chain
      const sysid = facts.sysid;
      if (!sameSystem(sysid, this.#target.ws.sysid)) {
        this.#sayOnce(
          `cluster ${sysid}`,
          'error',
          `WAL archiving stopped: DATABASE_URL now names another cluster (system identifier ${sysid}, archiving ${this.#target.ws.sysid})`,
          {
            fix: 'point DATABASE_URL back at the cluster being archived, or restart pg-maintd to archive the new one (it then takes a new base backup)',
          },
        );
        return;
      }
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
      sysid: this.#target?.ws.sysid,
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
      const session = new WalStream({
        config: this.#o.config,
        pool: this.#pool,
        uploader: this.uploader!,
        target: this.#target!,
        lag: this.lag,
        logger: this.#log,
        metrics: this.#o.metrics,
        onGap: (reason) => this.#callback(() => this.onGap?.(reason)),
        onNewTimeline: (timeline) => this.#callback(() => this.onNewTimeline?.(timeline)),
      });
      this.#session = session;
      try {
        await session.run(signal, major);
      } finally {
        this.#session = undefined;
      }
    } finally {
      await heartbeat.stop();
    }
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
