/**
 * Base backups that no schedule asks for, and the store-derived gauges between runs. A WAL chain
 * that breaks (the slot invalidated or dropped, WAL removed) or a new timeline (a promotion) makes
 * every later restore depend on a base backup taken after it: one is taken at once, under the same
 * `basebackup` lease as the scheduled ones, and retried with backoff until it succeeds. So is the
 * first one, when archiving runs and the store holds no usable base backup of this cluster: WAL
 * without a base backup restores nothing. Requests made while one runs are folded into the next run.
 */
import { errorMessage } from '../core/errors.js';
import { systemIdentifier } from '../db/cluster.js';
import { asLeader } from '../db/leader.js';
import { serverRole } from '../db/server-role.js';
import { Service } from '../lifecycle/service.js';
import type { BaseManifest } from './base-manifest.js';
import { takeBaseBackup } from './basebackup.js';
import { afterBaseBackup, type PitrJobDeps } from './jobs.js';
import { sleep } from './sleep.js';
import { refreshStoreMetrics } from './store-metrics.js';

type Trigger = Extract<BaseManifest['trigger'], 'wal_gap' | 'new_timeline' | 'first'>;

export interface BaseTriggerOptions {
  /** How often the store is read for the gauges (and for a missing first base backup). */
  refreshEveryMs?: number;
  /** The first wait after a failed base backup; it doubles up to 10 minutes. */
  retryAfterMs?: number;
}

export class BaseBackupTrigger extends Service {
  readonly name = 'pitr-base-trigger';
  readonly #deps: PitrJobDeps;
  readonly #refreshEveryMs: number;
  readonly #retryAfterMs: number;
  readonly #abort = new AbortController();
  #wake: AbortController = new AbortController();
  #pending: { trigger: Trigger; why: string } | undefined;
  /** Asked for while a base backup runs: it may have started before the break, so one more follows. */
  #next: { trigger: Trigger; why: string } | undefined;
  #taking = false;
  #loop: Promise<void> | undefined;

  constructor(deps: PitrJobDeps, o: BaseTriggerOptions = {}) {
    super();
    this.#deps = deps;
    this.#refreshEveryMs = o.refreshEveryMs ?? 60_000;
    this.#retryAfterMs = o.retryAfterMs ?? 60_000;
  }

  /** Asks for a base backup now (a gap, a new timeline); one already asked for stands. */
  request(trigger: Trigger, why: string): void {
    if (this.#taking) this.#next ??= { trigger, why };
    else this.#pending ??= { trigger, why };
    this.#wake.abort();
  }

  protected async onStart(): Promise<void> {
    this.#deps.metrics?.setArchiveMode(this.#deps.config.pitr.archive);
    this.#deps.metrics?.retentionDays.set(this.#deps.config.pitr.retentionDays);
    this.#loop = this.#run();
  }

  protected async onStop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const log = this.#deps.logger.child({ job: 'basebackup' });
    let retryMs = this.#retryAfterMs;
    while (!this.#abort.signal.aborted) {
      let waitMs = this.#refreshEveryMs;
      try {
        const sysid = await systemIdentifier(this.#deps.lockPool);
        const summary = this.#deps.metrics
          ? await refreshStoreMetrics(this.#deps.metrics, this.#deps.storage, sysid, this.#deps.signer)
          : undefined;
        // none at all: one whose stop segment is not stored yet becomes usable as WAL arrives
        if (summary && summary.bases.length === 0)
          this.#pending ??= {
            trigger: 'first',
            why: 'the store holds no usable base backup of this cluster',
          };
        if (this.#pending && (await serverRole(this.#deps.lockPool)) === 'primary') {
          this.#taking = true;
          const ran = await this.#take(this.#pending, log).finally(() => (this.#taking = false));
          if (ran) {
            this.#pending = undefined;
            retryMs = this.#retryAfterMs;
          }
          this.#pending ??= this.#next;
          this.#next = undefined;
        }
      } catch (err) {
        if (this.#abort.signal.aborted) break;
        log.error(
          {
            err: { message: errorMessage(err) },
            hint: (err as { hint?: string }).hint,
            trigger: this.#pending?.trigger,
          },
          this.#pending
            ? `the base backup that ${this.#pending.why} calls for failed; trying again in ${Math.round(retryMs / 1000)} s`
            : 'reading the store for the PITR metrics failed',
        );
        if (this.#pending) {
          waitMs = retryMs;
          retryMs = Math.min(retryMs * 2, 600_000);
        }
      }
      this.#wake = new AbortController();
      await sleep(waitMs, AbortSignal.any([this.#abort.signal, this.#wake.signal]));
    }
  }

  /** Takes one under the lease; false when another pg-maintd holds it (it takes it, or a later turn does). */
  async #take(p: { trigger: Trigger; why: string }, log: PitrJobDeps['logger']): Promise<boolean> {
    const deps = this.#deps;
    log.warn({ trigger: p.trigger }, `taking a base backup now: ${p.why}`);
    const r = await asLeader(
      deps.lockPool,
      'basebackup',
      { ttlMs: deps.config.leases.ttlMs, logger: log },
      async (leaseSignal) => {
        const m = await takeBaseBackup(deps, {
          trigger: p.trigger,
          signal: AbortSignal.any([this.#abort.signal, leaseSignal]),
        });
        await afterBaseBackup(deps, m.systemIdentifier);
      },
    );
    if (!r.led)
      log.info({ reason: r.reason }, 'another pg-maintd holds the base backup lease; checking again later');
    return r.led;
  }
}
