/**
 * One backup of one database, as a single stream with no temporary file:
 *   pg_dump -> parallel gzip -> SHA-256 -> storage (store-object.ts, shared with the globals)
 * then the manifest, written only after the data object is complete. Any failure (pg_dump exit or
 * kill, database gone, storage error, timeout, shutdown) leaves no good-looking backup behind.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/load.js';
import { LeaseLostError } from '../db/lease.js';
import { DbPool } from '../db/pool.js';
import { standbyStaleness } from '../db/replay.js';
import { explainConnectionError } from '../db/sqlstate.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import { VERSION } from '../core/version.js';
import type { Catalog } from './catalog.js';
import { ageEncrypter } from './age-stream.js';
import { checkRecipients, encryptionRecipients } from './encryption.js';
import { BackupError, startDump, type FailureReason, type RunningDump } from './dump.js';
import { parseManifest, type ManifestV2 } from './manifest.js';
import { estimateProgress } from './progress.js';
import type { BackupMetrics } from './metrics.js';
import { MANIFEST_SUFFIX, dataKey } from './naming.js';
import type { Storage } from './storage/storage.js';
import { storeObject } from './store-object.js';

export interface BackupDeps {
  config: Config;
  storage: Storage;
  catalog: Catalog;
  /** Observes the runs: the daemon attaches its metrics; a one-shot command has none. */
  metrics?: BackupMetrics;
  logger: Logger;
}

export interface BackupOptions {
  signal?: AbortSignal;
  /** The scheduled tick this run is for (recorded in the manifest). */
  tick?: Date;
  progressEveryMs?: number;
}

export async function runBackup(
  deps: BackupDeps,
  database: string,
  opts: BackupOptions = {},
): Promise<ManifestV2> {
  const { config, storage, metrics } = deps;
  const runId = randomBytes(4).toString('hex');
  const log = deps.logger.child({ job: 'backup', database, runId });
  const timeout = AbortSignal.timeout(config.backup.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  // timeouts of its own, as pg_dump states them: a role's or database's statement_timeout must not
  // cancel the run's small queries (BACKUP_TIMEOUT bounds the run)
  const pool = new DbPool(config.db, {
    name: 'backup',
    database,
    logger: deps.logger,
    max: 2,
    min: 0,
    statementTimeoutMs: 0,
    lockTimeoutMs: config.backup.lockWaitTimeoutMs,
  });
  let dump: RunningDump | undefined;
  let progress: NodeJS.Timeout | undefined;
  metrics?.inProgress.inc();
  const startedAt = new Date();
  // the duration on the monotonic clock: a wall clock stepped meanwhile must not make it negative
  const startedMono = performance.now();
  try {
    try {
      await storage.check();
    } catch (err) {
      throw new BackupError('storage', errorMessage(err), {
        hint: (err as OperatorError).hint,
        cause: err,
      });
    }
    const stale = await standbyStaleness(pool, config.backup.maxStandbyLagMs).catch((err: unknown) => {
      const { message, hint } = explainConnectionError(err, pool.description);
      throw new BackupError('database', message, { hint, cause: err });
    });
    if (stale)
      throw new BackupError('standby_lagging', `not backed up: ${stale.problem}`, { hint: stale.fix });
    // read now, for this run (a rotation needs no restart); unusable, the run fails: never stored plain
    const recipients = runRecipients(config);
    // the run's id makes the key unique; the store refuses to replace an object all the same
    const key = dataKey(database, startedAt, config.backup.format, runId, recipients.length > 0);
    log.info(
      {
        key,
        storage: storage.description,
        format: config.backup.format,
        ...(recipients.length ? { encryptedTo: recipients } : {}),
      },
      'backup started',
    );

    dump = await startDump({
      pool,
      ssl: config.db.ssl,
      format: config.backup.format,
      ownership: config.backup.ownership,
      clientBinDir: config.backup.clientBinDir,
      rowCountMaxTableBytes: config.backup.rowCountMaxTableBytes,
      lockWaitTimeoutMs: config.backup.lockWaitTimeoutMs,
    });
    const running = dump;
    const expectedBytes = await databaseSize(pool);
    // encrypted after compression, before the hash: size and checksum are of the stored bytes
    const encrypt = recipients.length ? await ageEncrypter(recipients) : undefined;
    // the data object completes only if pg_dump exited 0
    const object = storeObject({
      storage,
      key,
      source: running.stdout,
      exited: running.exited,
      kill: () => running.kill(),
      signal,
      compression: { level: config.backup.compressionLevel, threads: config.backup.compressionThreads },
      encrypt,
      expectedBytes,
      // counting runs in the snapshot's own session: its failure is the database's, and it ends the
      // exported snapshot, so pg_dump's failure that follows is only a symptom
      watch: running.rowCounts.catch((err: unknown) => {
        throw countFailure(err);
      }),
    });
    const { raw, hash } = object;
    const t0 = performance.now();
    progress = setInterval(() => {
      const ms = performance.now() - t0;
      log.info(
        {
          dumpedBytes: raw.bytes,
          compressedBytes: hash.bytes,
          storedBytes: object.stored(),
          mbPerSec: +(raw.bytes / 1e3 / ms).toFixed(1),
          // the dump's bytes against the database's size on disk: an estimate (indexes are not
          // dumped, text may be larger than its storage), said "about"
          ...(expectedBytes !== undefined ? { databaseBytes: expectedBytes, estimate: true } : {}),
          ...estimateProgress(raw.bytes, expectedBytes, ms),
        },
        'backup progress',
      );
    }, opts.progressEveryMs ?? 5000);
    progress.unref();
    const written = await object.done;
    // The data object is complete; a backup is good once its manifest is written. If that cannot be
    // done, the data object goes too: data without a manifest is never good.
    let manifest: ManifestV2;
    try {
      // Counting can queue behind a lock; BACKUP_TIMEOUT and shutdown still apply.
      const rowCounts = await untilAborted(running.rowCounts, signal).catch((err: unknown) => {
        if (signal.aborted) throw err;
        throw countFailure(err);
      });
      await running.release();
      const elapsedMs = performance.now() - startedMono;
      const finishedAt = new Date(startedAt.getTime() + elapsedMs);
      manifest = {
        manifestVersion: 2,
        key,
        database,
        format: config.backup.format,
        ownership: config.backup.ownership,
        compression: { algorithm: 'gzip', level: config.backup.compressionLevel, members: written.members },
        ...(recipients.length ? { encryption: { format: 'age' as const, recipients } } : {}),
        size: written.size,
        sha256: written.sha256,
        pgDumpVersion: running.pgDumpVersion,
        serverVersion: running.serverVersion,
        serverVersionNum: running.serverVersionNum,
        systemIdentifier: running.systemIdentifier,
        databaseTime: running.databaseTime.toISOString(),
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        durationSeconds: elapsedMs / 1000,
        ...(opts.tick ? { tick: opts.tick.toISOString() } : {}),
        rowCounts,
        warnings: [...running.warnings],
        tool: `pg-maintd ${VERSION}`,
      };
      if (deps.catalog.signer) manifest = deps.catalog.signer.sign(manifest);
      const text = JSON.stringify(manifest, null, 2);
      // what the catalog would refuse to read must not be written and reported as a good backup
      try {
        parseManifest(text, key + MANIFEST_SUFFIX);
      } catch (err) {
        throw new BackupError(
          'internal',
          `the manifest made for ${key} does not pass its own checks: ${errorMessage(err)}`,
          {
            hint: 'report this; nothing was kept',
            cause: err,
          },
        );
      }
      await storage.putSmall(key + MANIFEST_SUFFIX, text);
    } catch (err) {
      await storage.delete([key]).catch(() => undefined);
      if (err instanceof BackupError) throw err;
      throw new BackupError('storage', `completing the backup failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    metrics?.runs.inc({ database, result: 'success' });
    if (manifest.warnings.length) {
      metrics?.warnings.inc({ database }, manifest.warnings.length);
      log.warn(
        { key, warnings: manifest.warnings },
        'pg_dump succeeded with warnings (kept in the manifest): check that the backup holds what you need',
      );
    }
    skewWarning(manifest, deps.catalog.options.clockToleranceMs, log);
    log.info(
      {
        key,
        sizeBytes: manifest.size,
        dumpedBytes: raw.bytes,
        ratio: +(manifest.size / Math.max(1, raw.bytes)).toFixed(3),
        durationSeconds: manifest.durationSeconds,
        sha256: manifest.sha256,
        tables: Object.keys(manifest.rowCounts).length,
      },
      'backup complete',
    );
    return manifest;
  } catch (err) {
    dump?.kill();
    const failure = classifyFailure(err, signal, opts.signal);
    metrics?.recordFailure(database, failure.reason);
    log.error(
      {
        reason: failure.reason,
        err: { message: failure.error.message },
        hint: failure.error.hint,
        stderrTail: (err as { stderrTail?: string }).stderrTail,
      },
      'backup failed; nothing was kept',
    );
    throw failure.error;
  } finally {
    clearInterval(progress);
    metrics?.inProgress.dec();
    await dump?.release(true); // after a success this is a no-op; after a failure it cancels the snapshot session
    await pool.stop();
    await deps.metrics
      ?.refresh(deps.catalog, database)
      .catch((e: unknown) =>
        log.warn(
          { err: { message: errorMessage(e) }, hint: (e as OperatorError).hint },
          'reading the store for metrics failed',
        ),
      );
  }
}

/** The recipients of this run, checked; a BackupError (reason encryption) when they cannot be used. */
/**
 * The recipients a run encrypts to, read now (a rotation needs no restart); unusable, the run fails
 * with reason `encryption`: never stored plain.
 */
export function runRecipients(config: Config): string[] {
  try {
    const recipients = encryptionRecipients(config);
    checkRecipients(recipients);
    return recipients;
  } catch (err) {
    throw new BackupError('encryption', `not backed up: ${errorMessage(err)}`, {
      hint: (err as OperatorError).hint,
      cause: err,
    });
  }
}

function classifyFailure(
  err: unknown,
  signal: AbortSignal,
  external?: AbortSignal,
): { reason: FailureReason; error: BackupError } {
  if (external?.reason instanceof LeaseLostError)
    return {
      reason: 'lease_lost',
      error: new BackupError('lease_lost', `backup stopped: ${external.reason.message}`, {
        hint: 'another replica may run it now; if this repeats, check the database of DATABASE_URL is reachable and raise LEASE_TTL',
        cause: err,
      }),
    };
  if (external?.aborted)
    return {
      reason: 'aborted',
      error: new BackupError('aborted', 'backup aborted: pg-maintd is shutting down', { cause: err }),
    };
  if (signal.aborted) {
    return {
      reason: 'timeout',
      error: new BackupError('timeout', 'backup took longer than BACKUP_TIMEOUT and was aborted', {
        hint: 'raise BACKUP_TIMEOUT, or find what slows pg_dump or the storage',
        cause: err,
      }),
    };
  }
  if (err instanceof BackupError) return { reason: err.reason, error: err };
  if (err instanceof OperatorError)
    return {
      reason: 'storage',
      error: new BackupError('storage', err.message, { hint: err.hint, cause: err }),
    };
  const code = (err as NodeJS.ErrnoException).code;
  if (code && /^E(NOSPC|ACCES|PERM|ROFS|DQUOT|IO)$/.test(code)) {
    return {
      reason: 'storage',
      error: new BackupError('storage', `writing the backup failed: ${errorMessage(err)}`, {
        hint:
          code === 'ENOSPC' || code === 'EDQUOT'
            ? 'free space in BACKUP_DIR or lower the retention'
            : code === 'EROFS'
              ? 'the file system of BACKUP_DIR is mounted read-only: remount it read-write'
              : 'check the permissions of BACKUP_DIR',
        cause: err,
      }),
    };
  }
  return {
    reason: 'internal',
    error: new BackupError('internal', `backup failed: ${errorMessage(err)}`, { cause: err }),
  };
}

/** The promise, or a rejection as soon as the signal fires. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A failed row count: the database's failure, named as such. */
class CountError extends BackupError {}

function countFailure(err: unknown): BackupError {
  if (err instanceof BackupError) return err;
  return new CountError('database', `counting rows in the dump's snapshot failed: ${errorMessage(err)}`, {
    hint: 'check that the role of DATABASE_URL may read every table (pg_dump must too), and the server log',
    cause: err,
  });
}

/** The backup is kept, but a host clock that disagrees with the database's makes it misdated: say so now. */
function skewWarning(m: ManifestV2, toleranceMs: number, log: Logger): void {
  const aheadMs = Date.parse(m.startedAt) - Date.parse(m.databaseTime);
  if (Math.abs(aheadMs) > toleranceMs)
    log.warn(
      { key: m.key, skewSeconds: Math.round(aheadMs / 1000) },
      `this host's clock is ${aheadMs > 0 ? 'ahead of' : 'behind'} the database server's: the backup is kept but flagged misdated (never the latest, not counted for retention, never deleted by it) until the clocks agree; fix NTP`,
    );
}

async function databaseSize(pool: DbPool): Promise<number | undefined> {
  try {
    const r = await pool.query<{ n: string }>('SELECT pg_database_size(current_database()) AS n');
    return Number(r.rows[0]!.n);
  } catch {
    return undefined;
  }
}
