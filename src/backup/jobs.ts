/**
 * The scheduled backup and verification jobs. For each database, the replica holding the lease
 * `<job>:<database>` (schedule/leader.ts) runs the job; a replica that arrives after the leader
 * finished finds the tick recorded as done on the lease's row and skips, so each tick yields exactly one run
 * however many replicas there are. A run whose lease is lost midway is stopped (a backup fails with
 * reason lease_lost, nothing kept).
 */
import { serverClock } from '../db/cluster.js';
import type { DbPool } from '../db/pool.js';
import { explainConnectionError } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import { asLeader, holderText, type LeaderResult } from '../schedule/leader.js';
import type { JobSpec, Scheduler } from '../schedule/scheduler.js';
import { runBackup, type BackupDeps } from './backup.js';
import { applyRetention } from './retention.js';
import { runVerification } from './verify.js';

export interface JobDeps extends BackupDeps {
  /** Pool on the main database, where the lease table lives. */
  lockPool: DbPool;
  scheduler: Scheduler;
}

interface PerDatabaseJob {
  name: 'backup' | 'verify';
  cron: string;
  run(database: string, tick: Date, signal: AbortSignal): Promise<void>;
  /** Counts and logs a tick that failed before the run began (the run counts its own failures). */
  failedToStart(database: string, failure: StartFailure, log: Logger): void;
}

/** Why a tick could not start its run: the lease's database failed. */
interface StartFailure {
  reason: 'database';
  message: string;
  hint: string | undefined;
}

function startFailure(err: unknown, lockPool: DbPool): StartFailure {
  const { message, hint } = explainConnectionError(err, lockPool.description);
  return { reason: 'database', message: `cannot take the job's lease: ${message}`, hint };
}

/** Runs a job for each database under leader election; a replica that skips re-reads the store's truth. */
function perDatabase(deps: JobDeps, job: PerDatabaseJob): JobSpec {
  const { config, logger, scheduler } = deps;
  return {
    name: job.name,
    cron: job.cron,
    timezone: config.backup.timezone,
    async run(tick, signal) {
      for (const database of config.backup.databases) {
        if (signal.aborted) return;
        const log = logger.child({ job: job.name, database, tick: tick.toISOString() });
        // A tick that cannot reach the lease's database fails before its run begins; it is counted
        // here, so the failure metrics show an outage that starts between runs.
        let stage: 'lease' | 'run' = 'lease';
        const lease = { ttlMs: config.leases.ttlMs, logger: log };
        const r: LeaderResult<'ran' | 'already_done' | 'failed'> = await asLeader(
          deps.lockPool,
          `${job.name}:${database}`,
          lease,
          async (leaseSignal, held) => {
            // the slot done last is the database's record, written by the leader that did it: what
            // the store holds (anyone who can write there could plant a manifest) never skips a run
            const done = await held.lastDone();
            if (done && done.getTime() >= tick.getTime()) return 'already_done' as const;
            stage = 'run';
            await job.run(database, tick, AbortSignal.any([signal, leaseSignal]));
            await held.recordDone(tick);
            return 'ran' as const;
          },
        ).catch((err: unknown) => {
          if (stage === 'run')
            log.error({ err: { message: (err as Error).message } }, `scheduled ${job.name} failed`);
          else job.failedToStart(database, startFailure(err, deps.lockPool), log);
          return { led: true as const, value: 'failed' as const };
        });
        if (r.led && r.value !== 'already_done') continue;
        if (!r.led && r.reason === 'lease_unusable') {
          scheduler.recordSkip(job.name, 'lease_unusable');
          log.warn(
            { reason: 'lease_unusable', hint: r.problem.fix },
            `${r.problem.problem}: this tick is skipped, and no replica runs ${job.name} until it is fixed`,
          );
        } else if (!r.led) {
          scheduler.recordSkip(job.name, 'not_leader');
          log.info(
            { holder: holderText(r.holder) },
            'another pg-maintd holds the lease for this tick; skipped',
          );
        } else {
          scheduler.recordSkip(job.name, 'already_done');
          log.info('this tick was already done by another replica; skipped');
        }
        await deps.metrics.refresh(deps.catalog, database).catch(() => undefined);
      }
    },
  };
}

export function backupJob(deps: JobDeps): JobSpec {
  return perDatabase(deps, {
    name: 'backup',
    cron: deps.config.backup.schedule,
    async run(database, tick, signal) {
      await runBackup(deps, database, { signal, tick });
      // The backup is good whatever retention does next: its failure is retention's, not the backup's.
      const retentionDeps = {
        ...deps,
        clockToleranceMs: deps.config.backup.clockSkewToleranceMs,
        databaseClock: () => serverClock(deps.lockPool),
      };
      await applyRetention(retentionDeps, database, deps.config.retention).catch((err: unknown) =>
        deps.logger
          .child({ job: 'retention', database })
          .error(
            { err: { message: (err as Error).message }, hint: (err as { hint?: string }).hint },
            'retention after the backup failed; it runs again after the next backup',
          ),
      );
    },
    failedToStart(database, f, log) {
      deps.metrics.recordFailure(database, f.reason);
      log.error(
        { reason: f.reason, err: { message: f.message }, hint: f.hint },
        'backup failed; nothing was kept',
      );
    },
  });
}

export function verifyJob(deps: JobDeps): JobSpec {
  return perDatabase(deps, {
    name: 'verify',
    cron: deps.config.verify.schedule,
    async run(database, _tick, signal) {
      await runVerification(deps, database, { signal });
    },
    failedToStart(database, f, log) {
      deps.metrics.verifyRuns.inc({ database, result: 'failure' });
      log.error({ reason: f.reason, err: { message: f.message }, hint: f.hint }, 'verification failed');
    },
  });
}
