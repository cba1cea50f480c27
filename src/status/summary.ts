/**
 * What an SRE asks first, as one typed value: is the database up, when was the last good backup of
 * each database (how old, how big, restored by a drill or not), how did the last drill go, when do
 * the jobs run next, and are the metrics collectors healthy. The daemon builds it from what it holds
 * in memory (the landing page and /status), `pg-maintd status` from one look at the store and the
 * database; both render this same value.
 */
import type { CollectorHealth } from '../metrics/poller.js';
import { parseCron } from '../cron/cron.js';
import { VERSION } from '../core/version.js';

export type { CollectorHealth };

export type DrillResult = 'ok' | 'failed' | 'inconclusive';

/** A restore drill's record, as the store keeps it beside its backup. */
export interface DrillFacts {
  key: string;
  at: string;
  result: DrillResult;
  tablesCompared: number;
  mismatches: number;
  /** Why it was not ok, when it was not. */
  reason: string | null;
}

export interface NewestBackup {
  key: string;
  startedAt: string;
  finishedAt: string;
  /** The scheduled slot it ran for; null for one taken by hand. */
  tick: string | null;
  sizeBytes: number;
  durationSeconds: number;
  /** The drill recorded for this backup, if any. */
  drill: DrillFacts | null;
}

/** What the store held for one database when it was last listed. */
export interface BackupFacts {
  database: string;
  /** When the store was last listed for it; null when it has not been since start. */
  listedAt: string | null;
  /** Why the last listing failed, when it did (the facts are then those of the listing before). */
  listError: string | null;
  /** Good backups stored (suspect ones not counted). */
  stored: number;
  newest: NewestBackup | null;
  /** The newest drill recorded for any of its backups. */
  lastDrill: DrillFacts | null;
}

export interface BackupStatus extends BackupFacts {
  /** Seconds since the newest good backup finished. */
  ageSeconds: number | null;
  /** A drill restored the newest backup and its row counts matched. */
  verified: boolean;
  /**
   * When the newest backup counts as overdue: a scheduled slot after it passed, plus time for the
   * run, without a newer one. Null when it cannot be judged (BACKUP_SCHEDULE off, or no backup).
   */
  overdueAt: string | null;
  overdue: boolean;
}

export interface JobStatus {
  job: string;
  /** The cron expression, or how the job is started when it has none of its own. */
  schedule: string;
  timezone: string;
  next: string | null;
  inSeconds: number | null;
}

export type ProblemKind =
  'database_down' | 'store_unreadable' | 'backup_missing' | 'backup_overdue' | 'drill_failed';

export interface Problem {
  kind: ProblemKind;
  database?: string;
  message: string;
  fix: string;
}

export interface StatusSummary {
  service: 'pg-maintd';
  version: string;
  generatedAt: string;
  /** Who built it: the running daemon (from memory), or `pg-maintd status` (a look of its own). */
  source: 'daemon' | 'command';
  database: {
    /** pg_up; null when not known (not checked). */
    up: boolean | null;
    target: string;
    error: string | null;
  };
  store: { description: string };
  backups: BackupStatus[];
  jobs: JobStatus[];
  /** Null when the collectors were not polled (the database is down). */
  collectors: CollectorHealth[] | null;
  problems: Problem[];
}

export interface SummaryInput {
  source: StatusSummary['source'];
  now: Date;
  database: { up: boolean | null; target: string; error?: string | null };
  store: { description: string };
  /** BACKUP_SCHEDULE and SCHEDULE_TZ: what a backup's age is judged against. */
  backupSchedule: { cron: string; timezone: string };
  backups: BackupFacts[];
  jobs: ReadonlyArray<{ job: string; cron: string; timezone: string; next: Date | undefined }>;
  collectors: CollectorHealth[] | null;
}

const HOUR = 3_600_000;

/**
 * When the newest backup counts as overdue: the first slot of `schedule` after the backup's own,
 * plus twice the backup's duration or one period of the schedule up to an hour, whichever is longer
 * (the next run needs time to finish). Undefined when the schedule is off or has no slot left.
 */
export function overdueAt(
  newest: NewestBackup,
  schedule: { cron: string; timezone: string },
): Date | undefined {
  if (schedule.cron === 'off') return undefined;
  const cron = parseCron(schedule.cron);
  const slot = cron.next(Date.parse(newest.tick ?? newest.startedAt), schedule.timezone);
  if (slot === undefined) return undefined;
  const period = (cron.next(slot, schedule.timezone) ?? slot) - slot;
  return new Date(slot + Math.max(2 * newest.durationSeconds * 1000, Math.min(period, HOUR)));
}

export function summarize(i: SummaryInput): StatusSummary {
  const now = i.now.getTime();
  const backups = i.backups.map((b): BackupStatus => {
    const due = b.newest ? overdueAt(b.newest, i.backupSchedule) : undefined;
    return {
      ...b,
      ageSeconds: b.newest ? Math.max(0, (now - Date.parse(b.newest.finishedAt)) / 1000) : null,
      verified: b.newest?.drill?.result === 'ok',
      overdueAt: due ? due.toISOString() : null,
      overdue: due !== undefined && due.getTime() < now,
    };
  });
  const jobs: JobStatus[] = [];
  for (const j of i.jobs) {
    const status = {
      schedule: j.cron,
      timezone: j.timezone,
      next: j.next ? j.next.toISOString() : null,
      inSeconds: j.next ? Math.max(0, (j.next.getTime() - now) / 1000) : null,
    };
    jobs.push({ job: j.job, ...status });
    // retention has no schedule of its own: it runs after each backup
    if (j.job === 'backup') jobs.push({ job: 'retention', ...status, schedule: 'after each backup' });
  }
  return {
    service: 'pg-maintd',
    version: VERSION,
    generatedAt: i.now.toISOString(),
    source: i.source,
    database: { up: i.database.up, target: i.database.target, error: i.database.error ?? null },
    store: i.store,
    backups,
    jobs,
    collectors: i.collectors,
    problems: problemsOf(i, backups),
  };
}

function problemsOf(i: SummaryInput, backups: BackupStatus[]): Problem[] {
  const problems: Problem[] = [];
  if (i.database.up === false)
    problems.push({
      kind: 'database_down',
      message: `pg_up is 0: the database at ${i.database.target} cannot be reached${i.database.error ? ` (${i.database.error})` : ''}`,
      fix: 'check that PostgreSQL is running and that DATABASE_URL, the password and pg_hba.conf let pg-maintd in',
    });
  for (const b of backups) {
    if (b.listError)
      problems.push({
        kind: 'store_unreadable',
        database: b.database,
        message: `the backup store ${i.store.description} cannot be listed for ${JSON.stringify(b.database)}: ${b.listError}`,
        fix: 'check BACKUP_DIR or the S3 settings and credentials, and that the store is reachable',
      });
    else if (b.listedAt === null) continue; // not listed since start: unknown yet, not missing
    if (!b.newest) {
      if (!b.listError)
        problems.push({
          kind: 'backup_missing',
          database: b.database,
          message: `no good backup of ${JSON.stringify(b.database)} is stored`,
          fix: 'run `pg-maintd backup` (or check the daemon log for why scheduled backups fail)',
        });
      continue;
    }
    // The newest drill is what the backup-verify-failed alert pages on: a backup that did not
    // restore cleanly is not one to count on, whatever its age.
    if (b.lastDrill && b.lastDrill.result !== 'ok')
      problems.push({
        kind: 'drill_failed',
        database: b.database,
        message: `the last restore drill of ${JSON.stringify(b.database)} (${b.lastDrill.key}, ${b.lastDrill.at}) was ${b.lastDrill.result}${b.lastDrill.reason ? `: ${b.lastDrill.reason}` : ''}`,
        fix: 'run `pg-maintd verify --key` with that key to see it again, and follow the runbook entry PgMaintdBackupVerifyFailed',
      });
    if (b.overdue)
      problems.push({
        kind: 'backup_overdue',
        database: b.database,
        message: `the newest good backup of ${JSON.stringify(b.database)} finished ${b.newest.finishedAt}, older than BACKUP_SCHEDULE (${i.backupSchedule.cron}) allows since ${b.overdueAt}`,
        fix: 'check the daemon log for failed or skipped backups, or run `pg-maintd backup`',
      });
  }
  return problems;
}
