/**
 * One base backup for point-in-time recovery, as a single stream with no temporary file:
 *   pg_basebackup -D - -Ft -X none -> tar reader (backup_label, backup_manifest) -> parallel gzip
 *   [-> age, to BACKUP_ENCRYPTION_RECIPIENTS] -> SHA-256 -> storage
 * then its manifest, written only once the data object is complete. WAL is not included (-X none):
 * restores read it from the archive, whose chain from this backup's start is checked before use.
 * Any failure deletes the data object: no good-looking partial is ever left.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream';
import { ageEncrypter } from '../backup/age-stream.js';
import { encryptionRecipients } from '../backup/encryption.js';
import { ParallelGzip } from '../backup/gzip-parallel.js';
import { ByteCounter, EndGate, HashCounter } from '../backup/hash.js';
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import type { Config } from '../config/load.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { VERSION } from '../core/version.js';
import { DbPool } from '../db/pool.js';
import { LEASE_SESSION } from '../db/lease.js';
import { explainConnectionError } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import { libpqEnv, toolMajor, toolPath } from '../programs/client-tools.js';
import { parseBaseManifest, type BaseManifest } from './base-manifest.js';
import type { PitrMetrics } from './metrics.js';
import { BASE_MANIFEST_SUFFIX, baseKey } from './store-keys.js';
import { TarCapture } from './tar-capture.js';
import { parseBackupLabel, parsePgManifestEnd, type ServerFacts, serverFacts } from './server-facts.js';
import { formatLsn, segNoOf, segmentName } from './wal-name.js';

export interface BaseBackupDeps {
  config: Config;
  storage: Storage;
  signer?: Signer | undefined;
  metrics?: PitrMetrics | undefined;
  logger: Logger;
}

export interface BaseBackupOptions {
  trigger: BaseManifest['trigger'];
  tick?: Date;
  signal?: AbortSignal;
  progressEveryMs?: number;
}

export async function takeBaseBackup(deps: BaseBackupDeps, o: BaseBackupOptions): Promise<BaseManifest> {
  const { config, storage, metrics } = deps;
  const runId = randomBytes(4).toString('hex');
  const log = deps.logger.child({ job: 'basebackup', runId, trigger: o.trigger });
  // the server waits for the stop segment to be archived: a broken archive_command must not hold
  // the run (and its lease) forever
  const timeout = AbortSignal.timeout(config.backup.timeoutMs);
  const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
  const pool = new DbPool(config.db, {
    name: 'basebackup',
    logger: deps.logger,
    max: 1,
    min: 0,
    ...LEASE_SESSION,
  });
  const startedAt = new Date();
  const startedMono = performance.now();
  metrics?.baseInProgress.inc();
  let key: string | undefined;
  let progress: NodeJS.Timeout | undefined;
  let kill = () => undefined as void;
  try {
    await storage.check();
    let facts: ServerFacts;
    try {
      facts = await serverFacts(pool);
    } catch (err) {
      if (err instanceof OperatorError) throw err;
      const { message, hint } = explainConnectionError(err, pool.description);
      throw new OperatorError(`base backup not taken: ${message}`, {
        hint,
        exitCode: EXIT.UNAVAILABLE,
        cause: err,
      });
    }
    const tool = await toolMajor('pg_basebackup', config.backup.clientBinDir);
    if (tool.major < Math.floor(facts.serverVersionNum / 10000))
      throw new OperatorError(
        `pg_basebackup ${tool.version} is older than the server (${facts.serverVersion})`,
        {
          exitCode: EXIT.UNAVAILABLE,
          hint: 'install a pg_basebackup of the server’s major version or newer, or set PG_CLIENT_BIN_DIR',
        },
      );
    // the public keys only (read now: a rotation applies from the next backup); never the identity
    const recipients = encryptionRecipients(config);
    key = baseKey(facts.systemIdentifier, startedAt, runId, recipients.length > 0);
    log.info({ key, storage: storage.description }, 'base backup started');
    // -D - writes one tar to stdout (one tablespace only, checked above) with backup_manifest
    // injected at its end; -X none: the archive holds the WAL; -c fast: start at once
    const child = spawn(
      toolPath('pg_basebackup', config.backup.clientBinDir),
      ['-D', '-', '-Ft', '-X', 'none', '-c', 'fast', '--no-password', '--label', `pg-maintd ${runId}`],
      {
        env: libpqEnv(pool.target, config.db.ssl, { clientMajor: tool.major }),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderrTail = '';
    child.stderr.on('data', (d: Buffer) => (stderrTail = (stderrTail + d.toString()).slice(-4000)));
    kill = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', (err) =>
        reject(new OperatorError(`cannot run pg_basebackup: ${err.message}`, { cause: err })),
      );
      child.on('close', (code, sig) => {
        if (code === 0) return resolve();
        const how = sig ? `was killed by ${sig}` : `exited with code ${code}`;
        reject(
          new OperatorError(
            `pg_basebackup ${how}: ${stderrTail.trim().split('\n').slice(-5).join(' | ') || '(no stderr)'}`,
            {
              hint: 'the role of DATABASE_URL needs the REPLICATION attribute and a pg_hba.conf `replication` entry (`pg-maintd doctor` checks both)',
            },
          ),
        );
      });
    });
    exited.catch(() => undefined);
    const raw = new ByteCounter();
    const tar = new TarCapture(new Set(['backup_label', 'backup_manifest']));
    const gzip = new ParallelGzip({
      level: config.backup.compressionLevel,
      threads: config.backup.compressionThreads,
    });
    const hash = new HashCounter();
    const gate = new EndGate(() => exited);
    let stored = 0;
    progress = setInterval(
      () =>
        log.info(
          { tarBytes: raw.bytes, compressedBytes: hash.bytes, storedBytes: stored },
          'base backup progress',
        ),
      o.progressEveryMs ?? 10_000,
    );
    progress.unref();
    // encrypted after compression (age output does not compress); the hash is of the stored bytes,
    // what a check without the identity can verify
    const encrypt = recipients.length > 0 ? await ageEncrypter(recipients) : undefined;
    const piped = new Promise<void>((resolve, reject) =>
      pipeline(
        [child.stdout, raw, tar, gzip, ...(encrypt ? [encrypt] : []), hash, gate],
        (err: NodeJS.ErrnoException | null) => (err ? reject(err) : resolve()),
      ),
    );
    let first: unknown;
    const stopAll = (err: unknown) => {
      first ??= err;
      kill();
      const e = err instanceof Error ? err : new Error(String(err));
      gate.destroy(e);
    };
    const onAbort = () => stopAll(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const put = storage.putStream(key, gate, { signal, progress: (b) => (stored = b) });
    try {
      const results = await Promise.allSettled(
        [exited, piped, put].map((p) => p.catch((err: unknown) => (stopAll(err), Promise.reject(err)))),
      );
      if (first !== undefined || results.some((r) => r.status === 'rejected')) {
        // pg_basebackup's own failure says more than the broken pipe it caused
        const exit = results[0]!;
        throw exit.status === 'rejected' && !signal.aborted ? exit.reason : first;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    const label = tar.captured.get('backup_label');
    const pgManifest = tar.captured.get('backup_manifest');
    if (!label || !pgManifest)
      throw new OperatorError(
        `pg_basebackup's tar lacks ${label ? 'backup_manifest' : 'backup_label'}: not a base backup pg-maintd can restore`,
        { hint: 'use pg_basebackup 13 or newer (PG_CLIENT_BIN_DIR) and do not disable its manifest' },
      );
    const start = parseBackupLabel(label.toString('utf8'));
    const stopLsn = parsePgManifestEnd(pgManifest.toString('utf8'));
    const after = await facts.clockAfter(pool);
    // push the stop segment to the archive now rather than at the next archive_timeout
    await pool
      .query('SELECT pg_switch_wal()')
      .catch((err: unknown) =>
        log.debug(
          { err: { message: errorMessage(err) } },
          'pg_switch_wal() not permitted; the stop segment is archived when it fills',
        ),
      );
    const elapsedMs = performance.now() - startedMono;
    const bytes = facts.segmentBytes;
    let manifest: BaseManifest = {
      manifestVersion: 1,
      kind: 'basebackup',
      key,
      systemIdentifier: facts.systemIdentifier,
      timeline: start.timeline,
      startLsn: formatLsn(start.lsn),
      stopLsn: formatLsn(stopLsn),
      startWalFile: segmentName(start.timeline, segNoOf(start.lsn, bytes), bytes),
      stopWalFile: segmentName(start.timeline, segNoOf(stopLsn, bytes), bytes),
      segmentBytes: bytes,
      startDatabaseTime: facts.clockBefore.toISOString(),
      stopDatabaseTime: after.toISOString(),
      startedAt: startedAt.toISOString(),
      finishedAt: new Date(startedAt.getTime() + elapsedMs).toISOString(),
      durationSeconds: elapsedMs / 1000,
      serverVersion: facts.serverVersion,
      serverVersionNum: facts.serverVersionNum,
      pgBasebackupVersion: tool.version.slice(0, 200),
      format: 'tar',
      compression: { algorithm: 'gzip', level: config.backup.compressionLevel, members: gzip.members },
      ...(recipients.length > 0 ? { encryption: { format: 'age' as const, recipients } } : {}),
      size: hash.bytes,
      sha256: hash.sha256,
      rawBytes: raw.bytes,
      pgBackupManifest: { bytes: pgManifest.length, sha256: sha256(pgManifest) },
      ...(o.tick ? { tick: o.tick.toISOString() } : {}),
      trigger: o.trigger,
      tool: `pg-maintd ${VERSION}`,
    };
    if (deps.signer) manifest = deps.signer.sign(manifest);
    const text = JSON.stringify(manifest, null, 2);
    parseBaseManifest(text, key + BASE_MANIFEST_SUFFIX); // what the catalog would refuse is never written
    await storage.putSmall(key + BASE_MANIFEST_SUFFIX, text);
    metrics?.baseRuns.inc({ result: 'success', trigger: o.trigger });
    metrics?.baseLastSuccess.set(Date.parse(manifest.finishedAt) / 1000);
    metrics?.baseLastDuration.set(manifest.durationSeconds);
    metrics?.baseLastSize.set(manifest.size);
    log.info(
      {
        key,
        sizeBytes: manifest.size,
        tarBytes: manifest.rawBytes,
        durationSeconds: manifest.durationSeconds,
        startLsn: manifest.startLsn,
        stopLsn: manifest.stopLsn,
        timeline: manifest.timeline,
      },
      'base backup complete',
    );
    return manifest;
  } catch (err) {
    kill();
    if (key) await storage.delete([key]).catch(() => undefined);
    metrics?.baseRuns.inc({ result: 'failure', trigger: o.trigger });
    // stopped from outside (shutdown, a lost lease) or by BACKUP_TIMEOUT: that is the cause, whatever
    // failed after it
    const error = o.signal?.aborted
      ? new OperatorError(`base backup aborted: ${errorMessage(o.signal.reason)}`, { cause: err })
      : signal.aborted
        ? new OperatorError('base backup took longer than BACKUP_TIMEOUT and was aborted', {
            hint: 'raise BACKUP_TIMEOUT; if the server log says it waits for WAL to be archived, fix archive_command (pg-maintd wal-push)',
            cause: err,
          })
        : err instanceof OperatorError
          ? err
          : new OperatorError(`base backup failed: ${errorMessage(err)}`, { cause: err });
    log.error({ err: { message: error.message }, hint: error.hint }, 'base backup failed; nothing was kept');
    throw error;
  } finally {
    clearInterval(progress);
    metrics?.baseInProgress.dec();
    await pool.stop();
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
