/**
 * The scheduled backup and verification jobs. For each database, the replica holding the advisory
 * lock runs the job; a replica that arrives after the leader finished sees the tick in the newest
 * manifest and skips, so each tick yields exactly one backup however many replicas run.
 */
import type { DbPool } from '../db/pool.js';
import { asLeader } from '../schedule/leader.js';
import type { JobSpec, Scheduler } from '../schedule/scheduler.js';
import { runBackup, type BackupDeps } from './backup.js';
import { applyRetention } from './retention.js';
import { runVerification } from './verify.js';

export interface JobDeps extends BackupDeps {
  /** Pool on the main database, where the advisory locks live. */
  lockPool: DbPool;
  scheduler: Scheduler;
}

export function backupJob(deps: JobDeps): JobSpec {
  const { config, logger, scheduler } = deps;
  return {
    name: 'backup',
    cron: config.backup.schedule,
    timezone: config.backup.timezone,
    async run(tick, signal) {
      for (const database of config.backup.databases) {
        if (signal.aborted) return;
        const log = logger.child({ job: 'backup', database, tick: tick.toISOString() });
        const r = await asLeader(deps.lockPool, `backup:${database}`, async () => {
          const latest = await deps.catalog.latest(database);
          if (latest?.manifest.tick === tick.toISOString()) return 'already_done' as const;
          await runBackup(deps, database, { signal, tick });
          await applyRetention(deps, database, config.retention);
          return 'ran' as const;
        }).catch((err: unknown) => {
          log.error({ err: { message: (err as Error).message } }, 'scheduled backup failed');
          return { led: true as const, value: 'failed' as const };
        });
        if (!r.led) {
          scheduler.recordSkip('backup', 'not_leader');
          log.info('another replica holds the lock for this tick; skipped');
          await deps.metrics.refresh(deps.catalog, database).catch(() => undefined);
        } else if (r.value === 'already_done') {
          scheduler.recordSkip('backup', 'already_done');
          log.info('this tick was already backed up by another replica; skipped');
          await deps.metrics.refresh(deps.catalog, database).catch(() => undefined);
        }
      }
    },
  };
}

export function verifyJob(deps: JobDeps): JobSpec {
  const { config, logger, scheduler } = deps;
  return {
    name: 'verify',
    cron: config.verify.schedule,
    timezone: config.backup.timezone,
    async run(tick, signal) {
      for (const database of config.backup.databases) {
        if (signal.aborted) return;
        const r = await asLeader(deps.lockPool, `verify:${database}`, async () => {
          const latest = await deps.catalog.latest(database);
          if (latest?.verify && Date.parse(latest.verify.verifiedAt) >= tick.getTime())
            return 'already_done' as const;
          await runVerification(deps, database, { signal });
          return 'ran' as const;
        }).catch((err: unknown) => {
          logger.error(
            { job: 'verify', database, err: { message: (err as Error).message } },
            'scheduled restore drill failed',
          );
          return { led: true as const, value: 'failed' as const };
        });
        if (!r.led) scheduler.recordSkip('verify', 'not_leader');
        else if (r.value === 'already_done') scheduler.recordSkip('verify', 'already_done');
      }
    },
  };
}
