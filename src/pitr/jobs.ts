/**
 * The scheduled PITR jobs: base backups (BASEBACKUP_SCHEDULE) and drills (PITR_DRILL_SCHEDULE). Each
 * runs only on a primary (asked afresh each tick: a failover changes it) and under a lease of its
 * own, so however many replicas there are, each tick yields one run; a replica that arrives after the
 * leader finished finds the tick recorded as done and skips.
 */
import { errorMessage } from '../core/errors.js';
import { asLeader, holderText } from '../db/leader.js';
import type { DbPool } from '../db/pool.js';
import { serverRole } from '../db/server-role.js';
import type { JobOutcome, JobSpec } from '../schedule/scheduler.js';
import { takeBaseBackup, type BaseBackupDeps } from './basebackup.js';
import { applyPitrRetention } from './retention.js';
import { serverClock } from '../db/cluster.js';
import { runPitrDrill } from './drill.js';
import { refreshStoreMetrics } from './store-metrics.js';

export interface PitrJobDeps extends BaseBackupDeps {
  /** Pool on the main database, where the lease table lives. */
  lockPool: DbPool;
}

function leaderJob(
  deps: PitrJobDeps,
  name: 'basebackup' | 'pitr-drill',
  cron: string,
  work: (tick: Date, signal: AbortSignal) => Promise<void>,
): JobSpec {
  const { config, logger } = deps;
  return {
    name,
    cron,
    timezone: config.backup.timezone,
    async *run(tick, signal): AsyncGenerator<JobOutcome> {
      const log = logger.child({ job: name, tick: tick.toISOString() });
      const role = await serverRole(deps.lockPool).catch(() => undefined);
      if (role === 'standby') {
        log.info('the server is a standby: PITR jobs run from the pg-maintd on the primary; skipped');
        yield { kind: 'skipped', reason: 'standby' };
        return;
      }
      try {
        const r = await asLeader(
          deps.lockPool,
          name,
          { ttlMs: config.leases.ttlMs, logger: log },
          async (leaseSignal, held) => {
            const done = await held.lastDone();
            if (done && done.getTime() >= tick.getTime()) return 'already_done' as const;
            await work(tick, AbortSignal.any([signal, leaseSignal]));
            await held.recordDone(tick);
            return 'ran' as const;
          },
        );
        if (!r.led) {
          if (r.reason === 'lease_unusable') {
            log.warn({ hint: r.problem.fix }, `${r.problem.problem}: this tick is skipped`);
            yield { kind: 'skipped', reason: r.problem.standby ? 'standby' : 'lease_unusable' };
          } else {
            log.info(
              { holder: holderText(r.holder) },
              'another pg-maintd holds the lease for this tick; skipped',
            );
            yield { kind: 'skipped', reason: 'not_leader' };
          }
          return;
        }
        if (r.value === 'already_done') {
          log.info('this tick was already done by another replica; skipped');
          yield { kind: 'skipped', reason: 'already_done' };
          return;
        }
        yield { kind: 'ran' };
      } catch (err) {
        log.error({ err: { message: errorMessage(err) } }, `scheduled ${name} failed`);
        yield { kind: 'failed', reason: errorMessage(err) };
      }
    },
  };
}

export function basebackupJob(deps: PitrJobDeps): JobSpec {
  return leaderJob(deps, 'basebackup', deps.config.pitr.basebackupSchedule, async (tick, signal) => {
    const m = await takeBaseBackup(deps, { trigger: 'schedule', tick, signal });
    await afterBaseBackup(deps, m.systemIdentifier);
  });
}

/**
 * What follows every good base backup, under its lease: retention (older base backups and the WAL
 * only they needed), then the store-derived gauges. The backup is good whatever this does: a failure
 * here is logged and tried again after the next one.
 */
export async function afterBaseBackup(deps: PitrJobDeps, sysid: string): Promise<void> {
  const log = deps.logger.child({ job: 'pitr-retention' });
  try {
    await applyPitrRetention(
      {
        storage: deps.storage,
        sysid,
        signer: deps.signer,
        logger: deps.logger,
        metrics: deps.metrics,
        clockToleranceMs: deps.config.backup.clockSkewToleranceMs,
        databaseClock: () => serverClock(deps.lockPool),
        incompleteGraceMs: deps.config.retention.incompleteGraceMs,
      },
      { retentionDays: deps.config.pitr.retentionDays },
    );
  } catch (err) {
    log.error(
      { err: { message: errorMessage(err) }, hint: (err as { hint?: string }).hint },
      'PITR retention after the base backup failed; it runs again after the next one',
    );
  }
  if (deps.metrics)
    await refreshStoreMetrics(deps.metrics, deps.storage, sysid, deps.signer).catch((err: unknown) =>
      log.warn({ err: { message: errorMessage(err) } }, 'reading the store for the PITR metrics failed'),
    );
}

export function pitrDrillJob(deps: PitrJobDeps): JobSpec {
  return leaderJob(deps, 'pitr-drill', deps.config.pitr.drillSchedule, async (_tick, signal) => {
    const rec = await runPitrDrill(deps, { signal });
    if (rec.result === 'failed') throw new Error(`PITR drill failed: ${rec.reason ?? 'unknown'}`);
  });
}
