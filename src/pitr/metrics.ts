/**
 * Point-in-time recovery's metrics, in one place so the archiver, base backups, retention, drills,
 * the alert rules and the dashboard agree on their names. Jobs observe through this object when the
 * daemon hands it to them; a one-shot command has none.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export const WAL_UPLOAD_KINDS = ['segment', 'partial', 'history'] as const;
export type WalUploadKind = (typeof WAL_UPLOAD_KINDS)[number];
export const BASEBACKUP_TRIGGERS = ['schedule', 'command', 'wal_gap', 'new_timeline', 'first'] as const;
export const WAL_ARCHIVE_MODES = ['off', 'stream', 'command'] as const;
export const PITR_DRILL_RESULTS = ['ok', 'failed', 'inconclusive'] as const;

export class PitrMetrics {
  // archiving
  readonly archiverUp: Gauge;
  readonly archiveMode: Gauge<'mode'>;
  readonly uploaded: Counter<'kind'>;
  readonly uploadedBytes: Counter<'kind'>;
  readonly uploadFailures: Counter;
  readonly spoolRejected: Counter;
  readonly lastUpload: Gauge;
  readonly spoolBytes: Gauge;
  readonly spoolFiles: Gauge;
  readonly spoolFreeBytes: Gauge;
  readonly lagBytes: Gauge;
  readonly lagSeconds: Gauge;
  readonly receiverRestarts: Counter;
  readonly slotRetainedBytes: Gauge;
  readonly gaps: Counter;
  readonly heartbeatLast: Gauge;
  // base backups
  readonly baseLastSuccess: Gauge;
  readonly baseLastDuration: Gauge;
  readonly baseLastSize: Gauge;
  readonly baseOldest: Gauge;
  readonly baseRuns: Counter<'result' | 'trigger'>;
  readonly baseInProgress: Gauge;
  // the store's picture
  readonly windowStart: Gauge;
  readonly windowEnd: Gauge;
  readonly chainGap: Gauge;
  readonly retentionDeleted: Counter<'kind'>;
  readonly retentionBlocked: Gauge;
  readonly retentionLocked: Gauge;
  readonly retentionDays: Gauge;
  // drills
  readonly drillLastRun: Gauge;
  readonly drillLastSuccess: Gauge;
  readonly drillLastResult: Gauge<'result'>;
  readonly drillPrecision: Gauge;
  readonly drillRuns: Counter<'result'>;

  /** Says which WAL_ARCHIVE mode is in effect (the daemon calls it once its configuration is read). */
  setArchiveMode(mode: (typeof WAL_ARCHIVE_MODES)[number]): void {
    for (const m of WAL_ARCHIVE_MODES) this.archiveMode.set({ mode: m }, m === mode ? 1 : 0);
  }

  constructor(registry: Registry) {
    const registers = [registry];
    const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
    const counter = (name: string, help: string) => new Counter({ name, help, registers });
    this.archiverUp = gauge(
      'pgmaintd_wal_archiver_up',
      'Whether this pg-maintd is archiving WAL now (1: pg_receivewal streaming or wal-push mode checked; 0: down or not the leader).',
    );
    this.archiveMode = new Gauge({
      name: 'pgmaintd_wal_archive_mode',
      help: 'WAL_ARCHIVE as configured: 1 for the mode in effect (off, stream, command), 0 for the others. The archiving alerts fire only where it is not off.',
      labelNames: ['mode'],
      registers,
    });
    this.uploaded = new Counter({
      name: 'pgmaintd_wal_uploaded_total',
      help: 'WAL files stored by this process, by kind (segment, partial, history).',
      labelNames: ['kind'],
      registers,
    });
    this.uploadedBytes = new Counter({
      name: 'pgmaintd_wal_uploaded_bytes_total',
      help: 'Compressed bytes of WAL files stored by this process, by kind.',
      labelNames: ['kind'],
      registers,
    });
    this.uploadFailures = counter(
      'pgmaintd_wal_upload_failures_total',
      'Failed WAL uploads (retried; nothing is removed from the spool until stored).',
    );
    this.spoolRejected = counter(
      'pgmaintd_wal_spool_rejected_files_total',
      "Files in WAL_SPOOL_DIR that were not this cluster's WAL (another cluster's, or renamed), renamed aside there (<name>.rejected-...) and never stored.",
    );
    this.lastUpload = gauge(
      'pgmaintd_wal_last_upload_timestamp_seconds',
      'When a WAL file (finished or partial) was last stored (Unix seconds).',
    );
    this.spoolBytes = gauge(
      'pgmaintd_wal_spool_bytes',
      'Bytes of WAL in WAL_SPOOL_DIR not yet in the store (finished files; grows while the store is down).',
    );
    this.spoolFiles = gauge(
      'pgmaintd_wal_spool_files',
      'Finished WAL files in WAL_SPOOL_DIR waiting for upload.',
    );
    this.spoolFreeBytes = gauge(
      'pgmaintd_wal_spool_free_bytes',
      'Free bytes on the file system of WAL_SPOOL_DIR.',
    );
    this.lagBytes = gauge(
      'pgmaintd_wal_archive_lag_bytes',
      'WAL the server has written that the store does not hold yet (bytes).',
    );
    this.lagSeconds = gauge(
      'pgmaintd_wal_archive_lag_seconds',
      'Age of the oldest WAL byte the server has and the store does not: the data a lost server would take with it now (the RPO).',
    );
    this.receiverRestarts = counter(
      'pgmaintd_wal_receiver_restarts_total',
      'Times pg_receivewal exited and was started again.',
    );
    this.slotRetainedBytes = gauge(
      'pgmaintd_wal_slot_retained_bytes',
      "WAL the server keeps for pg-maintd's replication slot (bytes).",
    );
    this.gaps = counter(
      'pgmaintd_wal_gaps_total',
      'Breaks in the WAL chain found (a slot invalidated or dropped, WAL missing): each starts a new base backup.',
    );
    this.heartbeatLast = gauge(
      'pgmaintd_pitr_heartbeat_last_timestamp_seconds',
      'When the last heartbeat row was written (Unix seconds).',
    );
    this.baseLastSuccess = gauge(
      'pgmaintd_basebackup_last_success_timestamp_seconds',
      'Finish time of the newest good base backup in the store (Unix seconds).',
    );
    this.baseLastDuration = gauge(
      'pgmaintd_basebackup_last_duration_seconds',
      'Duration of the newest good base backup in the store.',
    );
    this.baseLastSize = gauge(
      'pgmaintd_basebackup_last_size_bytes',
      'Compressed size of the newest good base backup in the store.',
    );
    this.baseOldest = gauge(
      'pgmaintd_basebackup_oldest_timestamp_seconds',
      'Finish time of the oldest good base backup in the store (Unix seconds): with the restorable window, tells a new installation from a window that lost its start.',
    );
    this.baseRuns = new Counter({
      name: 'pgmaintd_basebackup_runs_total',
      help: 'Base backup runs by this process, by result (success, failure) and trigger.',
      labelNames: ['result', 'trigger'],
      registers,
    });
    this.baseInProgress = gauge('pgmaintd_basebackup_in_progress', 'Base backups running in this process.');
    this.windowStart = gauge(
      'pgmaintd_pitr_window_start_timestamp_seconds',
      'The earliest time that can be restored (the oldest usable base backup’s end; Unix seconds).',
    );
    this.windowEnd = gauge(
      'pgmaintd_pitr_window_end_timestamp_seconds',
      'The latest time that can be restored, as far as the stored WAL reaches (Unix seconds).',
    );
    this.chainGap = gauge(
      'pgmaintd_pitr_chain_gap',
      '1 when the stored WAL chain from the newest base backup has a gap (restores cannot pass it).',
    );
    this.retentionDeleted = new Counter({
      name: 'pgmaintd_pitr_retention_deleted_total',
      help: 'Objects PITR retention deleted, by kind (basebackup, wal, leftover).',
      labelNames: ['kind'],
      registers,
    });
    this.retentionBlocked = gauge(
      'pgmaintd_pitr_retention_blocked',
      '1 when PITR retention deletes no WAL because the chain has a gap or the clocks disagree.',
    );
    this.retentionLocked = gauge(
      'pgmaintd_pitr_retention_locked_objects',
      'Objects the last PITR retention run would have deleted but the store keeps locked (S3 Object Lock, an immutable file): retained, not failed, and deleted by a later run once the lock ends.',
    );
    this.retentionDays = gauge(
      'pgmaintd_pitr_retention_days',
      'PITR_RETENTION_DAYS: how many days back every second should be restorable.',
    );
    this.drillLastRun = gauge(
      'pgmaintd_pitr_drill_last_run_timestamp_seconds',
      'When the last PITR drill finished (Unix seconds).',
    );
    this.drillLastSuccess = gauge(
      'pgmaintd_pitr_drill_last_success_timestamp_seconds',
      'When the last PITR drill that passed finished (Unix seconds).',
    );
    this.drillLastResult = new Gauge({
      name: 'pgmaintd_pitr_drill_last_result',
      help: 'The last PITR drill’s result: 1 for the result it had (ok, failed, inconclusive), 0 for the others.',
      labelNames: ['result'],
      registers,
    });
    this.drillPrecision = gauge(
      'pgmaintd_pitr_drill_precision_seconds',
      'How far before its target the newest heartbeat the last PITR drill recovered was.',
    );
    this.drillRuns = new Counter({
      name: 'pgmaintd_pitr_drill_runs_total',
      help: 'PITR drills run by this process, by result.',
      labelNames: ['result'],
      registers,
    });
    for (const kind of WAL_UPLOAD_KINDS) {
      this.uploaded.inc({ kind }, 0);
      this.uploadedBytes.inc({ kind }, 0);
    }
    for (const result of PITR_DRILL_RESULTS) this.drillRuns.inc({ result }, 0);
    // read from the store: absent until it has been read (a 0 would be a date in 1970, and an alert)
    for (const g of [
      this.baseLastSuccess,
      this.baseLastDuration,
      this.baseLastSize,
      this.baseOldest,
      this.windowStart,
      this.windowEnd,
      this.drillLastRun,
      this.drillLastSuccess,
      this.drillPrecision,
    ])
      g.remove({});
  }
}
