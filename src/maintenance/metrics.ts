/**
 * Maintenance metrics. `job` is the maintenance step, vacuum or reindex (the scheduled job that runs
 * both in turn is "maintenance" in pgmaintd_job_skipped_total). Counters count what this process did.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export const MAINTENANCE_STEPS = ['vacuum', 'reindex'] as const;
export type MaintenanceStep = (typeof MAINTENANCE_STEPS)[number];

/**
 * success: everything planned was done; partial: some tables or indexes were skipped at
 * lock_timeout (retried next run); failure: a statement failed, or the run could not go on;
 * aborted: pg-maintd was shutting down.
 */
const RUN_RESULTS = ['success', 'partial', 'failure', 'aborted'] as const;
export type RunResult = (typeof RUN_RESULTS)[number];

const REBUILD_REASONS = ['invalid', 'bloat'] as const;

export class MaintenanceMetrics {
  readonly runs: Counter<'job' | 'result'>;
  readonly lastSuccess: Gauge<'job' | 'database'>;
  readonly lastDuration: Gauge<'job' | 'database'>;
  readonly tablesVacuumed: Counter<'database'>;
  readonly tablesAnalyzed: Counter<'database'>;
  readonly indexesRebuilt: Counter<'database' | 'reason'>;
  readonly leftoversDropped: Counter<'database'>;
  readonly lockTimeouts: Counter<'job' | 'database'>;

  constructor(registry: Registry, databases: readonly string[]) {
    const r = [registry];
    this.runs = new Counter({
      name: 'pgmaintd_maintenance_runs_total',
      help: 'Maintenance runs by this process (one per database and step), by step (job: vacuum, reindex) and result (success, partial, failure, aborted).',
      labelNames: ['job', 'result'],
      registers: r,
    });
    this.lastSuccess = new Gauge({
      name: 'pgmaintd_maintenance_last_success_timestamp_seconds',
      help: 'When the last maintenance run of this step that did everything it planned finished (Unix seconds).',
      labelNames: ['job', 'database'],
      registers: r,
    });
    this.lastDuration = new Gauge({
      name: 'pgmaintd_maintenance_last_duration_seconds',
      help: 'Duration of the last finished maintenance run of this step, whatever its result.',
      labelNames: ['job', 'database'],
      registers: r,
    });
    this.tablesVacuumed = new Counter({
      name: 'pgmaintd_maintenance_tables_vacuumed_total',
      help: 'Tables vacuumed (VACUUM (ANALYZE)) by the maintenance job.',
      labelNames: ['database'],
      registers: r,
    });
    this.tablesAnalyzed = new Counter({
      name: 'pgmaintd_maintenance_tables_analyzed_total',
      help: 'Tables only analyzed (ANALYZE: stale statistics, few dead rows) by the maintenance job.',
      labelNames: ['database'],
      registers: r,
    });
    this.indexesRebuilt = new Counter({
      name: 'pgmaintd_maintenance_indexes_rebuilt_total',
      help: 'Indexes rebuilt with REINDEX INDEX CONCURRENTLY, by reason (invalid, bloat).',
      labelNames: ['database', 'reason'],
      registers: r,
    });
    this.leftoversDropped = new Counter({
      name: 'pgmaintd_maintenance_invalid_indexes_dropped_total',
      help: 'Invalid leftovers of failed REINDEX CONCURRENTLY runs (*_ccnew, *_ccold) dropped with DROP INDEX CONCURRENTLY.',
      labelNames: ['database'],
      registers: r,
    });
    this.lockTimeouts = new Counter({
      name: 'pgmaintd_maintenance_lock_timeouts_total',
      help: 'Tables or indexes skipped because their lock was not granted within MAINTENANCE_LOCK_TIMEOUT (retried on the next run).',
      labelNames: ['job', 'database'],
      registers: r,
    });
    for (const job of MAINTENANCE_STEPS) for (const result of RUN_RESULTS) this.runs.inc({ job, result }, 0);
    for (const database of databases) {
      this.tablesVacuumed.inc({ database }, 0);
      this.tablesAnalyzed.inc({ database }, 0);
      this.leftoversDropped.inc({ database }, 0);
      for (const reason of REBUILD_REASONS) this.indexesRebuilt.inc({ database, reason }, 0);
      for (const job of MAINTENANCE_STEPS) this.lockTimeouts.inc({ job, database }, 0);
    }
  }

  recordRun(job: MaintenanceStep, database: string, result: RunResult, seconds: number): void {
    this.runs.inc({ job, result });
    this.lastDuration.set({ job, database }, seconds);
    if (result === 'success') this.lastSuccess.set({ job, database }, Date.now() / 1000);
  }
}
