/**
 * The scheduled maintenance job (MAINTENANCE_SCHEDULE). For each database the replica holding the
 * advisory lock `maintenance:<database>` runs it (the CLI's `maintenance run` takes the same lock);
 * the others skip. A replica that arrives after the leader finished re-plans from the statistics
 * the leader just refreshed and finds little or nothing to do.
 */
import { randomBytes } from 'node:crypto';
import type { DbPool } from '../db/pool.js';
import { errorMessage } from '../errors.js';
import { asLeader, type LeaderResult } from '../schedule/leader.js';
import type { JobSpec, Scheduler } from '../schedule/scheduler.js';
import { runMaintenance, type MaintenanceDeps, type MaintenanceReport, type RunOptions } from './run.js';

export const MAINTENANCE_JOB = 'maintenance';

export interface MaintenanceJobDeps extends MaintenanceDeps {
  /** Pool on the main database, where the advisory locks live. */
  lockPool: DbPool;
  scheduler: Scheduler;
}

/** A maintenance run on one database, if no other pg-maintd is running one there. */
export function maintainAsLeader(
  deps: MaintenanceDeps & { lockPool: DbPool },
  database: string,
  opts: RunOptions,
): Promise<LeaderResult<MaintenanceReport>> {
  return asLeader(deps.lockPool, `${MAINTENANCE_JOB}:${database}`, () =>
    runMaintenance(deps, database, opts),
  );
}

export function maintenanceJob(deps: MaintenanceJobDeps): JobSpec {
  const { config } = deps;
  return {
    name: MAINTENANCE_JOB,
    cron: config.maintenance.schedule,
    timezone: config.backup.timezone,
    async run(tick, signal) {
      for (const database of config.maintenance.databases) {
        if (signal.aborted) return;
        const runId = randomBytes(4).toString('hex');
        const log = deps.logger.child({ job: MAINTENANCE_JOB, database, runId, tick: tick.toISOString() });
        const r = await maintainAsLeader(deps, database, { signal, runId }).catch((err: unknown) => {
          log.error({ err: { message: errorMessage(err) } }, 'scheduled maintenance failed');
          return { led: true as const, value: undefined };
        });
        if (!r.led) {
          deps.scheduler.recordSkip(MAINTENANCE_JOB, 'not_leader');
          log.info('another replica holds the maintenance lock for this database; skipped');
        }
      }
    },
  };
}
