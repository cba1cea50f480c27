/**
 * Backup metrics. The "last success", "stored" and "verified" gauges are read back from the store
 * (the newest good manifest) on start and after every run, so they tell the stored truth after a
 * restart, on a replica that is not the leader, and after a one-shot `pg-maintd backup`.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { IGNORED_CLAIM_REASONS } from './claim.js';
import { SUSPECT_REASONS, trusted, type Catalog } from './catalog.js';
import { FAILURE_REASONS, type FailureReason } from './dump.js';
import { verifyResult, type VerifyResult } from './manifest.js';

const VERIFY_RESULTS: VerifyResult[] = ['ok', 'failed', 'inconclusive'];

export class BackupMetrics {
  readonly lastSuccess: Gauge<'database'>;
  readonly lastDuration: Gauge<'database'>;
  readonly lastSize: Gauge<'database'>;
  readonly runs: Counter<'database' | 'result'>;
  readonly failures: Counter<'database' | 'reason'>;
  readonly inProgress: Gauge;
  readonly stored: Gauge<'database'>;
  readonly oldest: Gauge<'database'>;
  readonly retentionDeleted: Counter<'database'>;
  readonly retentionLocked: Gauge<'database'>;
  readonly verifyLastSuccess: Gauge<'database'>;
  readonly verifyRuns: Counter<'database' | 'result'>;
  readonly verifyLastResult: Gauge<'database' | 'result'>;
  readonly suspicious: Gauge<'database' | 'reason'>;
  readonly warnings: Counter<'database'>;
  readonly lastWarnings: Gauge<'database'>;
  readonly retentionSkipped: Counter<'database' | 'reason'>;
  readonly clockSkew: Gauge<'reference'>;
  readonly claimsIgnored: Counter<'database' | 'reason'>;
  readonly globalsRuns: Counter<'result'>;
  readonly globalsFailures: Counter<'reason'>;
  readonly globalsLastSuccess: Gauge;
  readonly globalsRetentionLocked: Gauge;

  constructor(registry: Registry, databases: readonly string[]) {
    const r = [registry];
    this.lastSuccess = new Gauge({
      name: 'pgmaintd_backup_last_success_timestamp_seconds',
      help: 'Finish time of the newest good backup in the store (Unix seconds).',
      labelNames: ['database'],
      registers: r,
    });
    this.lastDuration = new Gauge({
      name: 'pgmaintd_backup_last_duration_seconds',
      help: 'Duration of the newest good backup in the store.',
      labelNames: ['database'],
      registers: r,
    });
    this.lastSize = new Gauge({
      name: 'pgmaintd_backup_last_size_bytes',
      help: 'Compressed size of the newest good backup in the store.',
      labelNames: ['database'],
      registers: r,
    });
    this.runs = new Counter({
      name: 'pgmaintd_backup_runs_total',
      help: 'Backup runs by this process, by result (success, failure).',
      labelNames: ['database', 'result'],
      registers: r,
    });
    this.failures = new Counter({
      name: 'pgmaintd_backup_failures_total',
      help: `Failed backup runs by this process, by reason (${FAILURE_REASONS.join(', ')}).`,
      labelNames: ['database', 'reason'],
      registers: r,
    });
    this.inProgress = new Gauge({
      name: 'pgmaintd_backup_in_progress',
      help: 'Backups running in this process now.',
      registers: r,
    });
    this.stored = new Gauge({
      name: 'pgmaintd_backup_stored',
      help: 'Good backups (with a manifest) in the store.',
      labelNames: ['database'],
      registers: r,
    });
    this.oldest = new Gauge({
      name: 'pgmaintd_backup_oldest_timestamp_seconds',
      help: 'Start time of the oldest good backup in the store (Unix seconds).',
      labelNames: ['database'],
      registers: r,
    });
    this.retentionDeleted = new Counter({
      name: 'pgmaintd_retention_deleted_total',
      help: 'Backups deleted by retention (good ones past the policy, and incomplete leftovers).',
      labelNames: ['database'],
      registers: r,
    });
    this.retentionLocked = new Gauge({
      name: 'pgmaintd_backup_retention_locked_objects',
      help: 'Objects the last retention run would have deleted but the store keeps locked (S3 Object Lock, an immutable file): retained, not failed, and deleted by a later run once the lock ends.',
      labelNames: ['database'],
      registers: r,
    });
    this.verifyLastSuccess = new Gauge({
      name: 'pgmaintd_backup_verify_last_success_timestamp_seconds',
      help: 'Time of the newest successful restore drill recorded in the store (Unix seconds).',
      labelNames: ['database'],
      registers: r,
    });
    this.verifyRuns = new Counter({
      name: 'pgmaintd_backup_verify_runs_total',
      help: 'Restore drills by this process, by result (success, failure, inconclusive: nothing could be compared).',
      labelNames: ['database', 'result'],
      registers: r,
    });
    this.verifyLastResult = new Gauge({
      name: 'pgmaintd_backup_verify_last_result',
      help: 'Result of the newest restore drill recorded in the store: 1 on its result (ok, failed, inconclusive), 0 on the others.',
      labelNames: ['database', 'result'],
      registers: r,
    });
    this.suspicious = new Gauge({
      name: 'pgmaintd_backup_suspicious',
      help: `Objects in the store that look like backups but are not trusted, by reason (${SUSPECT_REASONS.join(', ')}).`,
      labelNames: ['database', 'reason'],
      registers: r,
    });
    this.warnings = new Counter({
      name: 'pgmaintd_backup_warnings_total',
      help: 'Warnings pg_dump printed during backups that succeeded, by this process.',
      labelNames: ['database'],
      registers: r,
    });
    this.lastWarnings = new Gauge({
      name: 'pgmaintd_backup_last_warnings',
      help: 'Warnings pg_dump printed for the newest good backup in the store (its manifest keeps them).',
      labelNames: ['database'],
      registers: r,
    });
    this.retentionSkipped = new Counter({
      name: 'pgmaintd_retention_skipped_total',
      help: "Retention runs that deleted nothing they would have, by reason (clock_skew: the local clock disagrees with the store or the database; clock_unchecked: no clock but this host's own could be read).",
      labelNames: ['database', 'reason'],
      registers: r,
    });
    this.clockSkew = new Gauge({
      name: 'pgmaintd_clock_skew_seconds',
      help: 'The local clock minus a reference clock (store, database), as last measured before retention.',
      labelNames: ['reference'],
      registers: r,
    });
    this.claimsIgnored = new Counter({
      name: 'pgmaintd_backup_claims_ignored_total',
      help: `Slot claims found in the store and not obeyed (the backup ran all the same), by reason (${IGNORED_CLAIM_REASONS.join(', ')}): planted by a writer of the store, or from another cluster.`,
      labelNames: ['database', 'reason'],
      registers: r,
    });
    this.globalsRuns = new Counter({
      name: 'pgmaintd_backup_globals_runs_total',
      help: "Runs by this process that stored the cluster's globals (pg_dumpall --globals-only), by result (success, failure).",
      labelNames: ['result'],
      registers: r,
    });
    this.globalsFailures = new Counter({
      name: 'pgmaintd_backup_globals_failures_total',
      help: `Failed globals runs by this process, by reason (${FAILURE_REASONS.join(', ')}); the dumps of the run go on.`,
      labelNames: ['reason'],
      registers: r,
    });
    this.globalsLastSuccess = new Gauge({
      name: 'pgmaintd_backup_globals_last_success_timestamp_seconds',
      help: 'Finish time of the newest globals this process stored (Unix seconds).',
      registers: r,
    });
    this.globalsRetentionLocked = new Gauge({
      name: 'pgmaintd_backup_globals_retention_locked_objects',
      help: 'Globals objects the last globals retention run would have deleted but the store keeps locked: retained, not failed, and deleted by a later run once the lock ends.',
      registers: r,
    });
    for (const result of ['success', 'failure']) this.globalsRuns.inc({ result }, 0);
    for (const reason of FAILURE_REASONS) this.globalsFailures.inc({ reason }, 0);
    for (const database of databases) {
      for (const reason of IGNORED_CLAIM_REASONS) this.claimsIgnored.inc({ database, reason }, 0);
      for (const result of ['success', 'failure', 'inconclusive'])
        this.verifyRuns.inc({ database, result }, 0);
      for (const result of ['success', 'failure']) this.runs.inc({ database, result }, 0);
      for (const reason of FAILURE_REASONS) this.failures.inc({ database, reason }, 0);
      this.retentionDeleted.inc({ database }, 0);
      for (const reason of ['clock_skew', 'clock_unchecked'])
        this.retentionSkipped.inc({ database, reason }, 0);
      this.warnings.inc({ database }, 0);
      for (const reason of SUSPECT_REASONS) this.suspicious.set({ database, reason }, 0);
    }
  }

  recordFailure(database: string, reason: FailureReason): void {
    this.runs.inc({ database, result: 'failure' });
    this.failures.inc({ database, reason });
  }

  /** Reads the store and sets the stored-truth gauges for one database. */
  async refresh(catalog: Catalog, database: string): Promise<void> {
    const listing = await catalog.list(database);
    const good = trusted(listing);
    this.stored.set({ database }, good.length);
    const newest = good[0];
    if (newest) {
      this.lastSuccess.set({ database }, Date.parse(newest.manifest.finishedAt) / 1000);
      this.lastDuration.set({ database }, newest.manifest.durationSeconds);
      this.lastSize.set({ database }, newest.size);
      this.lastWarnings.set(
        { database },
        'warnings' in newest.manifest ? newest.manifest.warnings.length : 0,
      );
      this.oldest.set({ database }, good.at(-1)!.at.getTime() / 1000);
    } else {
      for (const g of [this.lastSuccess, this.lastDuration, this.lastSize, this.oldest, this.lastWarnings])
        g.remove({ database });
    }
    const counts = new Map<string, number>(SUSPECT_REASONS.map((r) => [r, 0]));
    for (const g of listing.good)
      if (g.suspect) counts.set(g.suspect.reason, counts.get(g.suspect.reason)! + 1);
    for (const l of listing.incomplete) if (l.reason) counts.set(l.reason, counts.get(l.reason)! + 1);
    for (const [reason, n] of counts) this.suspicious.set({ database, reason }, n);
    const drills = good.map((g) => g.verify).filter((v) => v !== undefined);
    const verified = drills.filter((v) => verifyResult(v) === 'ok').map((v) => Date.parse(v.verifiedAt));
    if (verified.length) this.verifyLastSuccess.set({ database }, Math.max(...verified) / 1000);
    const last = drills.sort((a, b) => Date.parse(b.verifiedAt) - Date.parse(a.verifiedAt))[0];
    for (const result of VERIFY_RESULTS)
      if (last) this.verifyLastResult.set({ database, result }, verifyResult(last) === result ? 1 : 0);
      else this.verifyLastResult.remove({ database, result });
  }
}
