/**
 * The scheduled backup and verification jobs. For each database, the replica holding the advisory
 * lock runs the job; a replica that arrives after the leader finished sees the tick already done in
 * the store and skips, so each tick yields exactly one run however many replicas there are.
 */
import type { DbPool } from '../db/pool.js';
import { explainConnectionError } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import { asLeader } from '../schedule/leader.js';
import type { JobSpec, Scheduler } from '../schedule/scheduler.js';
import { runBackup, type BackupDeps } from './backup.js';
import type { GoodBackup } from './catalog.js';
import { applyRetention } from './retention.js';
import { runVerification } from './verify.js';

export interface JobDeps extends BackupDeps {
  /** Pool on the main database, where the advisory locks live. */
  lockPool: DbPool;
  scheduler: Scheduler;
}

interface PerDatabaseJob {
  name: 'backup' | 'verify';
  cron: string;
  /** The newest good backup shows this tick was already handled by another replica. */
  alreadyDone(latest: GoodBackup | undefined, tick: Date): boolean;
  run(database: string, tick: Date, signal: AbortSignal): Promise<void>;
  /** Counts and logs a tick that failed before the run began (the run counts its own failures). */
  failedToStart(database: string, failure: StartFailure, log: Logger): void;
}

/** Why a tick could not start its run: the lock's database or the store's listing failed. */
interface StartFailure {
  reason: 'database' | 'storage';
  message: string;
  hint: string | undefined;
}

function startFailure(stage: 'lock' | 'store', err: unknown, lockPool: DbPool): StartFailure {
  if (stage === 'lock') {
    const { message, hint } = explainConnectionError(err, lockPool.description);
    return { reason: 'database', message: `cannot take the job's lock: ${message}`, hint };
  }
  return {
    reason: 'storage',
    message: `cannot read the stored backups: ${(err as Error).message}`,
    hint: (err as { hint?: string }).hint,
  };
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
        // A tick that cannot reach the lock's database or list the store fails before its run
        // begins; it is counted here, so the failure metrics show an outage that starts between runs.
        let stage: 'lock' | 'store' | 'run' = 'lock';
        const r = await asLeader(deps.lockPool, `${job.name}:${database}`, async () => {
          stage = 'store';
          const latest = await deps.catalog.latest(database);
          if (job.alreadyDone(latest, tick)) return 'already_done' as const;
          stage = 'run';
          await job.run(database, tick, signal);
          return 'ran' as const;
        }).catch((err: unknown) => {
          if (stage === 'run')
            log.error({ err: { message: (err as Error).message } }, `scheduled ${job.name} failed`);
          else job.failedToStart(database, startFailure(stage, err, deps.lockPool), log);
          return { led: true as const, value: 'failed' as const };
        });
        const skipped = !r.led ? 'not_leader' : r.value === 'already_done' ? 'already_done' : undefined;
        if (skipped) {
          scheduler.recordSkip(job.name, skipped);
          log.info(
            skipped === 'not_leader'
              ? 'another replica holds the lock for this tick; skipped'
              : 'this tick was already done by another replica; skipped',
          );
          await deps.metrics.refresh(deps.catalog, database).catch(() => undefined);
        }
      }
    },
  };
}

export function backupJob(deps: JobDeps): JobSpec {
  return perDatabase(deps, {
    name: 'backup',
    cron: deps.config.backup.schedule,
    alreadyDone: (latest, tick) => latest?.manifest.tick === tick.toISOString(),
    async run(database, tick, signal) {
      await runBackup(deps, database, { signal, tick });
      // The backup is good whatever retention does next: its failure is retention's, not the backup's.
      await applyRetention(deps, database, deps.config.retention).catch((err: unknown) =>
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
    alreadyDone: (latest, tick) => !!latest?.verify && Date.parse(latest.verify.verifiedAt) >= tick.getTime(),
    async run(database, _tick, signal) {
      await runVerification(deps, database, { signal });
    },
    failedToStart(database, f, log) {
      deps.metrics.verifyRuns.inc({ database, result: 'failure' });
      log.error({ reason: f.reason, err: { message: f.message }, hint: f.hint }, 'verification failed');
    },
  });
}
