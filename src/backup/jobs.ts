/**
 * The scheduled backup and verification jobs. For each database, the replica holding the advisory
 * lock runs the job; a replica that arrives after the leader finished sees the tick already done in
 * the store and skips, so each tick yields exactly one run however many replicas there are.
 */
import type { DbPool } from '../db/pool.js';
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
        const r = await asLeader(deps.lockPool, `${job.name}:${database}`, async () => {
          if (job.alreadyDone(await deps.catalog.latest(database), tick)) return 'already_done' as const;
          await job.run(database, tick, signal);
          return 'ran' as const;
        }).catch((err: unknown) => {
          log.error({ err: { message: (err as Error).message } }, `scheduled ${job.name} failed`);
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
      await applyRetention(deps, database, deps.config.retention);
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
  });
}
