/**
 * The scheduled backup and verification jobs. Each run first asks the server's role
 * (pg_is_in_recovery(), afresh each time: a promotion or a failover changes it under a running
 * pg-maintd) and skips when the job does not run there: backups by BACKUP_FROM, drills on a primary
 * only (they need a writable server for their scratch database and the lease table).
 *
 * On a primary, for each database, the replica holding the lease `<job>:<database>`
 * (db/leader.ts) runs the job; a replica that arrives after the leader finished finds the tick
 * recorded as done on the lease's row and skips, so each tick yields exactly one run however many
 * replicas there are. A run whose lease is lost midway is stopped (a backup fails with reason
 * lease_lost, nothing kept). With BACKUP_FROM standby or any, a backup also claims its slot in the
 * store (claim.ts) before it starts, which is all a daemon on a standby has (the lease table is
 * read-only there): daemons that watch different servers of one cluster and share a store take one
 * backup per slot between them.
 */
import { randomBytes } from 'node:crypto';
import { serverClock, systemIdentifier } from '../db/cluster.js';
import type { DbPool } from '../db/pool.js';
import { serverRole, type ServerRole } from '../db/server-role.js';
import { explainConnectionError } from '../db/sqlstate.js';
import type { LeaseHolder } from '../db/lease.js';
import type { LeaseProblem } from '../db/lease-table.js';
import type { Logger } from '../log/logger.js';
import { asLeader, holderText } from '../db/leader.js';
import type { JobSpec } from '../schedule/scheduler.js';
import { StateSkip } from '../schedule/state-skip.js';
import { runBackup, type BackupDeps } from './backup.js';
import { GLOBALS_CLAIM, claimSlot, type SlotClaim } from './claim.js';
import { standbyStaleness } from '../db/replay.js';
import { applyRetention } from './retention.js';
import { runVerification } from './verify.js';
import { BackupError } from './dump.js';
import { runGlobalsBackup } from './globals-backup.js';
import { applyGlobalsRetention } from './globals-retention.js';
import { errorMessage } from '../core/errors.js';

export interface JobDeps extends BackupDeps {
  /** Pool on the main database, where the lease table lives. */
  lockPool: DbPool;
}

interface PerDatabaseJob {
  name: 'backup' | 'verify';
  cron: string;
  /** The server roles the job runs on. */
  runsOn: readonly ServerRole[];
  /** Whether a run first claims its slot in the store (backups: the one thing servers share). */
  claims: boolean;
  run(database: string, tick: Date, signal: AbortSignal): Promise<void>;
  /** Counts and logs a tick that failed before the run began (the run counts its own failures). */
  failedToStart(database: string, failure: StartFailure, log: Logger): void;
  /** Once per tick, before the databases (the cluster's globals); its failure is its own. */
  beforeDatabases?(tick: Date, role: ServerRole, signal: AbortSignal, log: Logger): Promise<void>;
  /** Once per tick, after the databases, when this process ran any of them. */
  afterDatabases?(tick: Date, log: Logger): Promise<void>;
}

/** Why a tick could not start its run: the lease's database failed, the store refused the slot's
 * claim, or the standby it would back up from is behind. */
interface StartFailure {
  reason: 'database' | 'storage' | 'standby_lagging';
  message: string;
  hint: string | undefined;
}

function startFailure(err: unknown, lockPool: DbPool): StartFailure {
  const { message, hint } = explainConnectionError(err, lockPool.description);
  return { reason: 'database', message: `cannot take the job's lease: ${message}`, hint };
}

type Outcome =
  | { kind: 'ran' }
  | { kind: 'already_done' }
  | { kind: 'failed'; reason: string }
  | { kind: 'not_leader'; holder: LeaseHolder }
  | { kind: 'lease_unusable'; problem: LeaseProblem }
  | { kind: 'claimed'; claim: SlotClaim };

const ROLE_SKIP: Record<PerDatabaseJob['name'], Record<ServerRole, string>> = {
  backup: {
    standby: 'the server is a standby: backups are taken from the primary (BACKUP_FROM=primary)',
    primary: 'the server is a primary: backups are taken from a standby (BACKUP_FROM=standby)',
  },
  verify: {
    standby: 'the server is a standby: restore drills run from the pg-maintd on the primary',
    primary: '',
  },
};

/** Runs a job for each database under leader election; a replica that skips re-reads the store's truth. */
function perDatabase(deps: JobDeps, job: PerDatabaseJob): JobSpec {
  const { config, logger } = deps;
  const wrongRole = new StateSkip(job.name);
  return {
    name: job.name,
    cron: job.cron,
    timezone: config.backup.timezone,
    async *run(tick, signal) {
      const tickLog = logger.child({ job: job.name, tick: tick.toISOString() });
      // unreadable (the database is down): the lease below fails and counts it
      const role = await serverRole(deps.lockPool).catch(() => undefined);
      if (role && !job.runsOn.includes(role)) {
        const skipped = wrongRole.skip(role, tickLog, `${ROLE_SKIP[job.name][role]}: skipped`);
        for (const database of config.backup.databases)
          await deps.metrics?.refresh(deps.catalog, database).catch(() => undefined);
        yield skipped;
        return;
      }
      if (role) wrongRole.clear(tickLog, `the server is a ${role} now: ${job.name} runs again`);
      await job.beforeDatabases?.(tick, role ?? 'primary', signal, tickLog);
      let ranAny = false;
      for (const database of config.backup.databases) {
        if (signal.aborted) break;
        const log = tickLog.child({ database });
        const r = await runOnce(deps, job, database, tick, role ?? 'primary', signal, log);
        switch (r.kind) {
          case 'lease_unusable':
            // demoted since the role was asked: a standby's skip, not a lease table to fix
            if (r.problem.standby) {
              yield { kind: 'skipped', reason: 'standby' };
              log.info(`${ROLE_SKIP[job.name].standby}: skipped`);
              break;
            }
            yield { kind: 'skipped', reason: 'lease_unusable' };
            log.warn(
              { reason: 'lease_unusable', hint: r.problem.fix },
              `${r.problem.problem}: this tick is skipped, and no replica runs ${job.name} until it is fixed`,
            );
            break;
          case 'not_leader':
            yield { kind: 'skipped', reason: 'not_leader' };
            log.info(
              { holder: holderText(r.holder) },
              'another pg-maintd holds the lease for this tick; skipped',
            );
            break;
          case 'already_done':
            yield { kind: 'skipped', reason: 'already_done' };
            log.info('this tick was already done by another replica; skipped');
            break;
          case 'claimed':
            yield { kind: 'skipped', reason: 'claimed' };
            log.info(
              {
                reason: 'claimed',
                claimant: r.claim.holder,
                role: r.claim.role,
                claimedAt: r.claim.claimedAt,
              },
              `another pg-maintd sharing the store (on the ${r.claim.role}) claimed this slot; skipped`,
            );
            break;
          default:
            if (r.kind === 'ran') ranAny = true;
            yield r;
            continue;
        }
        await deps.metrics?.refresh(deps.catalog, database).catch(() => undefined);
      }
      if (ranAny && !signal.aborted) await job.afterDatabases?.(tick, tickLog);
    },
  };
}

/**
 * One database's run: under its lease on a primary, with none on a standby (its lease table is
 * read-only); with BACKUP_FROM standby or any, a backup claims the slot in the store before it
 * starts, either way.
 */
async function runOnce(
  deps: JobDeps,
  job: PerDatabaseJob,
  database: string,
  tick: Date,
  role: ServerRole,
  signal: AbortSignal,
  log: Logger,
): Promise<Outcome> {
  // a failure before the run began is the lease's database's, counted apart from the run's own
  const at: { stage: 'lease' | 'claim' | 'run' } = { stage: 'lease' };
  const work = async (runSignal: AbortSignal): Promise<Outcome> => {
    if (job.claims) {
      // a standby that is behind must not take the slot from a primary that could back it up
      if (role === 'standby') {
        const stale = await standbyStaleness(deps.lockPool, deps.config.backup.maxStandbyLagMs);
        if (stale) {
          job.failedToStart(
            database,
            { reason: 'standby_lagging', message: `not backed up: ${stale.problem}`, hint: stale.fix },
            log,
          );
          return { kind: 'failed', reason: 'standby_lagging' };
        }
      }
      at.stage = 'claim';
      const claim = await takeSlot(deps, database, tick, role, log);
      if (claim) return { kind: 'claimed', claim };
    }
    at.stage = 'run';
    await job.run(database, tick, runSignal);
    return { kind: 'ran' };
  };
  try {
    if (role === 'standby') return await work(signal);
    const lease = { ttlMs: deps.config.leases.ttlMs, logger: log };
    const r = await asLeader(deps.lockPool, `${job.name}:${database}`, lease, async (leaseSignal, held) => {
      // the slot done last is the database's record, written by the leader that did it: what
      // the store holds (anyone who can write there could plant a manifest) never skips a run
      const done = await held.lastDone();
      if (done && done.getTime() >= tick.getTime()) return { kind: 'already_done' } as const;
      const outcome = await work(AbortSignal.any([signal, leaseSignal]));
      if (outcome.kind === 'ran') await held.recordDone(tick);
      return outcome;
    });
    if (r.led) return r.value;
    return r.reason === 'lease_unusable'
      ? { kind: 'lease_unusable', problem: r.problem }
      : { kind: 'not_leader', holder: r.holder };
  } catch (err) {
    if (at.stage === 'run') {
      log.error({ err: { message: errorMessage(err) } }, `scheduled ${job.name} failed`);
      return { kind: 'failed', reason: errorMessage(err) };
    }
    const failure =
      at.stage === 'claim'
        ? {
            reason: 'storage' as const,
            message: `cannot claim the slot in the store: ${errorMessage(err)}`,
            hint: (err as { hint?: string }).hint,
          }
        : startFailure(err, deps.lockPool);
    job.failedToStart(database, failure, log);
    return { kind: 'failed', reason: failure.reason };
  }
}

/**
 * Claims the slot in the store: undefined when this process has it (or the claim found there is
 * not one to obey: logged at warn, counted), the claim of the pg-maintd that has it otherwise.
 */
async function takeSlot(
  deps: JobDeps,
  database: string,
  tick: Date,
  role: ServerRole,
  log: Logger,
  /** Count an ignored claim under the database's label (not for the globals: no database). */
  counted = true,
): Promise<SlotClaim | undefined> {
  const outcome = await claimSlot(
    {
      storage: deps.storage,
      signer: deps.catalog.signer,
      clockToleranceMs: deps.config.backup.clockSkewToleranceMs,
    },
    {
      database,
      slot: tick,
      role,
      systemIdentifier: await systemIdentifier(deps.lockPool),
      runId: randomBytes(4).toString('hex'),
    },
  );
  if (!outcome.won) return outcome.claim;
  if ('ignored' in outcome) {
    if (counted) deps.metrics?.claimsIgnored.inc({ database, reason: outcome.ignored });
    log.warn(
      { reason: outcome.ignored, claim: outcome.detail },
      'a claim on this slot in the store is not one pg-maintd obeys (planted by someone who can write to the store?): backing up all the same',
    );
  }
  return undefined;
}

const BACKUP_ROLES: Record<JobDeps['config']['backup']['from'], readonly ServerRole[]> = {
  primary: ['primary'],
  standby: ['standby'],
  any: ['primary', 'standby'],
};

export function backupJob(deps: JobDeps): JobSpec {
  return perDatabase(deps, {
    name: 'backup',
    cron: deps.config.backup.schedule,
    runsOn: BACKUP_ROLES[deps.config.backup.from],
    // only primaries back up by default, and they share the lease table: the store, which others
    // may write, then has no say in whether a backup runs
    claims: deps.config.backup.from !== 'primary',
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
            { err: { message: errorMessage(err) }, hint: (err as { hint?: string }).hint },
            'retention after the backup failed; it runs again after the next backup',
          ),
      );
    },
    async beforeDatabases(tick, role, signal, log) {
      if (deps.config.backup.globals.enabled) await globalsOnce(deps, tick, role, signal, log);
    },
    async afterDatabases(_tick, log) {
      if (!deps.config.backup.globals.enabled) return;
      await applyGlobalsRetention(
        {
          ...deps,
          clockToleranceMs: deps.config.backup.clockSkewToleranceMs,
          databaseClock: () => serverClock(deps.lockPool),
        },
        deps.config.backup.databases,
        deps.config.retention,
      ).catch((err: unknown) =>
        log
          .child({ job: 'retention', globals: true })
          .error(
            { err: { message: errorMessage(err) }, hint: (err as { hint?: string }).hint },
            'retention of the globals failed; it runs again after the next backup',
          ),
      );
    },
    failedToStart(database, f, log) {
      deps.metrics?.recordFailure(database, f.reason);
      log.error(
        { reason: f.reason, err: { message: f.message }, hint: f.hint },
        'backup failed; nothing was kept',
      );
    },
  });
}

/** Not `backup:<something>`: any name can be a database's, whose own lease that would be. */
const GLOBALS_LEASE = 'backup-globals';

/**
 * The cluster's globals, once per tick: on a primary under the lease `backup-globals` (a tick a
 * replica already did is skipped); with BACKUP_FROM standby or any, first through a claim of the
 * tick in the store, as the dumps (a standby's lease table is read-only, and daemons on the primary
 * and on a standby share only the store). Its failure is logged and counted by the run, and never
 * stops the databases' dumps.
 */
async function globalsOnce(
  deps: JobDeps,
  tick: Date,
  role: ServerRole,
  signal: AbortSignal,
  tickLog: Logger,
): Promise<void> {
  const log = tickLog.child({ job: 'backup-globals' });
  try {
    if (deps.config.backup.from !== 'primary') {
      const claim = await takeSlot(deps, GLOBALS_CLAIM, tick, role, log, false);
      if (claim) {
        log.info(
          { claimant: claim.holder, role: claim.role },
          `another pg-maintd sharing the store (on the ${claim.role}) claimed the globals of this tick; skipped`,
        );
        return;
      }
    }
    if (role === 'standby') {
      await runGlobalsBackup(deps, { signal, tick });
      return;
    }
    const lease = { ttlMs: deps.config.leases.ttlMs, logger: log };
    const r = await asLeader(deps.lockPool, GLOBALS_LEASE, lease, async (leaseSignal, held) => {
      const done = await held.lastDone();
      if (done && done.getTime() >= tick.getTime()) return 'already_done';
      await runGlobalsBackup(deps, { signal: AbortSignal.any([signal, leaseSignal]), tick });
      await held.recordDone(tick);
      return 'ran';
    });
    if (!r.led && r.reason === 'lease_unusable')
      log.warn({ hint: r.problem.fix }, `${r.problem.problem}: the globals of this tick are not stored`);
    else if (!r.led) log.info('another pg-maintd stores the globals of this tick; skipped');
    else if (r.value === 'already_done') log.info('the globals of this tick were already stored; skipped');
  } catch (err) {
    // runGlobalsBackup has counted and logged its own failure; the lease's is logged here
    if (!(err instanceof BackupError))
      log.error(
        { err: { message: errorMessage(err) }, hint: (err as { hint?: string }).hint },
        "cannot take the globals' lease: the globals of this tick are not stored (the dumps go on)",
      );
  }
}

export function verifyJob(deps: JobDeps): JobSpec {
  return perDatabase(deps, {
    name: 'verify',
    cron: deps.config.verify.schedule,
    runsOn: ['primary'],
    claims: false,
    async run(database, _tick, signal) {
      await runVerification(deps, database, { signal });
    },
    failedToStart(database, f, log) {
      deps.metrics?.verifyRuns.inc({ database, result: 'failure' });
      log.error({ reason: f.reason, err: { message: f.message }, hint: f.hint }, 'verification failed');
    },
  });
}
