/**
 * The scheduled maintenance job (MAINTENANCE_SCHEDULE). For each database the replica holding the
 * lease `maintenance:<database>` (db/leader.ts) runs it (the CLI's `maintenance run` takes
 * the same lease); the others skip. A replica that arrives after the leader finished re-plans from
 * the statistics the leader just refreshed and finds little or nothing to do. A run whose lease is
 * lost midway is aborted: its statement in flight is cancelled. On a standby (asked at each run:
 * a promotion changes it) nothing is attempted: VACUUM, ANALYZE and REINDEX are refused there, and
 * the primary's maintenance reaches the standby through replication.
 */
import { randomBytes } from 'node:crypto';
import type { DbPool } from '../db/pool.js';
import { serverRole } from '../db/server-role.js';
import { errorMessage } from '../core/errors.js';
import { asLeader, holderText, type LeaderResult } from '../db/leader.js';
import type { JobSpec } from '../schedule/scheduler.js';
import { StateSkip } from '../schedule/state-skip.js';
import { runMaintenance, type MaintenanceDeps, type MaintenanceReport, type RunOptions } from './run.js';

export const MAINTENANCE_JOB = 'maintenance';

export interface MaintenanceJobDeps extends MaintenanceDeps {
  /** Pool on the main database, where the lease table lives. */
  lockPool: DbPool;
}

/** A maintenance run on one database, if no other pg-maintd is running one there. */
export function maintainAsLeader(
  deps: MaintenanceDeps & { lockPool: DbPool },
  database: string,
  opts: RunOptions,
): Promise<LeaderResult<MaintenanceReport>> {
  const lease = {
    ttlMs: deps.config.leases.ttlMs,
    logger: deps.logger.child({ job: MAINTENANCE_JOB, database }),
  };
  return asLeader(deps.lockPool, `${MAINTENANCE_JOB}:${database}`, lease, (leaseSignal) =>
    runMaintenance(deps, database, { ...opts, signal: AbortSignal.any([opts.signal, leaseSignal]) }),
  );
}

export function maintenanceJob(deps: MaintenanceJobDeps): JobSpec {
  const { config } = deps;
  const standby = new StateSkip(MAINTENANCE_JOB);
  return {
    name: MAINTENANCE_JOB,
    cron: config.maintenance.schedule,
    timezone: config.backup.timezone,
    async *run(tick, signal) {
      const tickLog = deps.logger.child({ job: MAINTENANCE_JOB, tick: tick.toISOString() });
      // unreadable (the database is down): the lease below fails and says so
      const role = await serverRole(deps.lockPool).catch(() => undefined);
      if (role === 'standby') {
        yield standby.skip(
          'standby',
          tickLog,
          'the server is a standby: maintenance runs on the primary (its effects replicate); skipped',
        );
        return;
      }
      if (role) standby.clear(tickLog, 'the server is a primary now: maintenance runs again');
      for (const database of config.maintenance.databases) {
        if (signal.aborted) break;
        const runId = randomBytes(4).toString('hex');
        const log = deps.logger.child({ job: MAINTENANCE_JOB, database, runId, tick: tick.toISOString() });
        const r = await maintainAsLeader(deps, database, { signal, runId }).catch((err: unknown) => {
          log.error({ err: { message: errorMessage(err) } }, 'scheduled maintenance failed');
          return { led: false as const, reason: 'failed' as const, message: errorMessage(err) };
        });
        if (r.led) yield { kind: 'ran' };
        else if (r.reason === 'failed') yield { kind: 'failed', reason: r.message };
        else if (r.reason === 'lease_unusable') {
          yield { kind: 'skipped', reason: 'lease_unusable' };
          log.warn(
            { reason: 'lease_unusable', hint: r.problem.fix },
            `${r.problem.problem}: this tick is skipped, and no replica runs maintenance until it is fixed`,
          );
        } else {
          yield { kind: 'skipped', reason: 'not_leader' };
          log.info(
            { holder: holderText(r.holder) },
            'another pg-maintd holds the maintenance lease for this database; skipped',
          );
        }
      }
    },
  };
}
