/**
 * Backup metrics. The "last success", "stored" and "verified" gauges are read back from the store
 * (the newest good manifest) on start and after every run, so they tell the stored truth after a
 * restart, on a replica that is not the leader, and after a one-shot `pg-maintd backup`.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Catalog } from './catalog.js';
import { FAILURE_REASONS, type FailureReason } from './dump.js';

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
  readonly verifyLastSuccess: Gauge<'database'>;
  readonly verifyRuns: Counter<'database' | 'result'>;

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
    this.verifyLastSuccess = new Gauge({
      name: 'pgmaintd_backup_verify_last_success_timestamp_seconds',
      help: 'Time of the newest successful restore drill recorded in the store (Unix seconds).',
      labelNames: ['database'],
      registers: r,
    });
    this.verifyRuns = new Counter({
      name: 'pgmaintd_backup_verify_runs_total',
      help: 'Restore drills by this process, by result (success, failure).',
      labelNames: ['database', 'result'],
      registers: r,
    });
    for (const database of databases) {
      for (const result of ['success', 'failure']) {
        this.runs.inc({ database, result }, 0);
        this.verifyRuns.inc({ database, result }, 0);
      }
      for (const reason of FAILURE_REASONS) this.failures.inc({ database, reason }, 0);
      this.retentionDeleted.inc({ database }, 0);
    }
  }

  recordFailure(database: string, reason: FailureReason): void {
    this.runs.inc({ database, result: 'failure' });
    this.failures.inc({ database, reason });
  }

  /** Reads the store and sets the stored-truth gauges for one database. */
  async refresh(catalog: Catalog, database: string): Promise<void> {
    const { good } = await catalog.list(database);
    this.stored.set({ database }, good.length);
    const newest = good[0];
    if (newest) {
      this.lastSuccess.set({ database }, Date.parse(newest.manifest.finishedAt) / 1000);
      this.lastDuration.set({ database }, newest.manifest.durationSeconds);
      this.lastSize.set({ database }, newest.size);
      this.oldest.set({ database }, good.at(-1)!.at.getTime() / 1000);
    } else {
      for (const g of [this.lastSuccess, this.lastDuration, this.lastSize, this.oldest])
        g.remove({ database });
    }
    const verified = good
      .map((g) => g.verify)
      .filter((v) => v?.ok)
      .map((v) => Date.parse(v!.verifiedAt));
    if (verified.length) this.verifyLastSuccess.set({ database }, Math.max(...verified) / 1000);
  }
}
