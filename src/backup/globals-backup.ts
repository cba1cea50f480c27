/**
 * The cluster's globals, once per backup run: `pg_dumpall --globals-only` (roles, memberships, role
 * settings, tablespaces) through the dumps' pipeline (store-object.ts), then its manifest. A dump
 * holds no roles, so without these a restore onto a new server misses every role its objects name.
 *
 * Password hashes are left out (--no-role-passwords) unless BACKUP_GLOBALS_PASSWORDS is set and the
 * role may read pg_authid; when it may not, the globals are stored without them and a warning says
 * why. The connection is libpq's environment only, never argv, as pg_dump's.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { DbPool } from '../db/pool.js';
import { explainConnectionError } from '../db/sqlstate.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { VERSION } from '../core/version.js';
import {
  IMAGE_CLIENT_MAJOR,
  dbnameConninfo,
  libpqEnv,
  toolMajor,
  toolPath,
} from '../programs/client-tools.js';
import { runRecipients, type BackupDeps } from './backup.js';
import { ageEncrypter } from './age-stream.js';
import { BackupError } from './dump.js';
import { globalsKey, parseGlobalsManifest, type GlobalsManifest } from './globals-manifest.js';
import { MANIFEST_SUFFIX } from './naming.js';
import { storeObject } from './store-object.js';

interface ServerInfo {
  num: string;
  version: string;
  system: string;
  now: Date;
  authid: boolean;
  db: string;
}

export async function runGlobalsBackup(
  deps: BackupDeps,
  opts: { signal?: AbortSignal; tick?: Date } = {},
): Promise<GlobalsManifest> {
  const { config, storage, metrics } = deps;
  const runId = randomBytes(4).toString('hex');
  const log = deps.logger.child({ job: 'backup-globals', runId });
  const timeout = AbortSignal.timeout(config.backup.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const pool = new DbPool(config.db, { name: 'backup-globals', logger: deps.logger, max: 1, min: 0 });
  const startedAt = new Date();
  const startedMono = performance.now();
  let kill = () => {};
  try {
    try {
      await storage.check();
    } catch (err) {
      throw new BackupError('storage', errorMessage(err), { hint: (err as OperatorError).hint, cause: err });
    }
    const info = await pool
      .query<ServerInfo>(
        `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version,
                (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS system, now() AS now,
                pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS authid,
                current_database() AS db`,
      )
      .then((r) => r.rows[0]!)
      .catch((err: unknown) => {
        const { message, hint } = explainConnectionError(err, pool.description);
        throw new BackupError('database', message, { hint, cause: err });
      });
    let tool: { major: number; version: string };
    try {
      tool = await toolMajor('pg_dumpall', config.backup.clientBinDir);
    } catch (err) {
      throw new BackupError('pg_dump', errorMessage(err), { hint: (err as OperatorError).hint, cause: err });
    }
    const serverMajor = Math.floor(Number(info.num) / 10000);
    if (tool.major < serverMajor)
      throw new BackupError(
        'version_mismatch',
        `pg_dumpall ${tool.major} (${tool.version}) is older than the server, PostgreSQL ${serverMajor} (${info.version})`,
        {
          hint: `install postgresql-client-${serverMajor} or newer (the Docker image ships ${IMAGE_CLIENT_MAJOR}), or point PG_CLIENT_BIN_DIR at it`,
        },
      );
    const passwords = config.backup.globals.passwords && info.authid;
    if (config.backup.globals.passwords && !info.authid)
      log.warn(
        { user: pool.target.user },
        "BACKUP_GLOBALS_PASSWORDS is set, but this role may not read pg_authid (only a superuser may): the globals are stored without the roles' passwords; set them again after a restore, or back up as a superuser",
      );
    const recipients = runRecipients(config);
    const key = globalsKey(startedAt, runId, recipients.length > 0);
    log.info(
      {
        key,
        storage: storage.description,
        passwords,
        ...(recipients.length ? { encryptedTo: recipients } : {}),
      },
      'globals backup started',
    );
    const encrypt = recipients.length ? await ageEncrypter(recipients) : undefined;
    const args = [
      '--globals-only',
      '--no-password',
      // the database the pool uses: a name holding "=" would otherwise be read as a connection string
      `--database=${dbnameConninfo(info.db)}`,
      ...(passwords ? [] : ['--no-role-passwords']),
    ];
    const child = spawn(toolPath('pg_dumpall', config.backup.clientBinDir), args, {
      env: libpqEnv(pool.target, config.db.ssl, { database: info.db, clientMajor: tool.major }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    kill = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', (err) =>
        reject(new BackupError('pg_dump', `cannot run pg_dumpall: ${err.message}`, { cause: err })),
      );
      child.on('close', (code, sig) => {
        if (code === 0) return resolve();
        const tail = stderr.trim().split('\n').slice(-5).join(' | ') || '(no stderr)';
        reject(
          new BackupError(
            'pg_dump',
            `pg_dumpall ${sig ? `was killed by ${sig}` : `exited with code ${code}`}: ${tail}`,
            /permission denied/i.test(stderr)
              ? {
                  hint: "pg_dumpall --globals-only reads pg_roles, pg_auth_members, pg_db_role_setting and pg_tablespace (and pg_authid with BACKUP_GLOBALS_PASSWORDS): grant the backup role that, or set BACKUP_GLOBALS=false; the databases' dumps are not affected",
                }
              : {},
          ),
        );
      });
    });
    exited.catch(() => undefined);
    const written = await storeObject({
      storage,
      key,
      source: child.stdout,
      exited,
      kill,
      signal,
      compression: { level: config.backup.compressionLevel, threads: config.backup.compressionThreads },
      encrypt,
    }).done;
    try {
      const elapsedMs = performance.now() - startedMono;
      let manifest: GlobalsManifest = {
        manifestVersion: 2,
        kind: 'globals',
        key,
        database: info.db,
        compression: { algorithm: 'gzip', level: config.backup.compressionLevel, members: written.members },
        ...(recipients.length ? { encryption: { format: 'age' as const, recipients } } : {}),
        size: written.size,
        sha256: written.sha256,
        passwords,
        pgDumpallVersion: tool.version,
        serverVersion: info.version,
        serverVersionNum: Number(info.num),
        systemIdentifier: info.system,
        databaseTime: info.now.toISOString(),
        startedAt: startedAt.toISOString(),
        finishedAt: new Date(startedAt.getTime() + elapsedMs).toISOString(),
        durationSeconds: elapsedMs / 1000,
        ...(opts.tick ? { tick: opts.tick.toISOString() } : {}),
        tool: `pg-maintd ${VERSION}`,
      };
      if (deps.catalog.signer) manifest = deps.catalog.signer.sign(manifest);
      const text = JSON.stringify(manifest, null, 2);
      parseGlobalsManifest(text, key + MANIFEST_SUFFIX); // what the listing would refuse is never written
      await storage.putSmall(key + MANIFEST_SUFFIX, text);
      metrics?.globalsRuns.inc({ result: 'success' });
      metrics?.globalsLastSuccess.set(Date.parse(manifest.finishedAt) / 1000);
      log.info(
        { key, sizeBytes: written.size, sha256: written.sha256, passwords },
        'globals backup complete',
      );
      return manifest;
    } catch (err) {
      await storage.delete([key]).catch(() => undefined);
      throw new BackupError('storage', `completing the globals backup failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  } catch (err) {
    kill();
    const e =
      err instanceof BackupError
        ? err
        : signal.aborted
          ? new BackupError(
              opts.signal?.aborted ? 'aborted' : 'timeout',
              `globals backup stopped: ${errorMessage(err)}`,
              {
                cause: err,
              },
            )
          : err instanceof OperatorError
            ? new BackupError('storage', err.message, { hint: err.hint, cause: err })
            : new BackupError('internal', `globals backup failed: ${errorMessage(err)}`, { cause: err });
    metrics?.globalsRuns.inc({ result: 'failure' });
    metrics?.globalsFailures.inc({ reason: e.reason });
    log.error(
      { reason: e.reason, err: { message: e.message }, hint: e.hint },
      "globals backup failed; nothing of it was kept (the databases' dumps go on)",
    );
    throw e;
  } finally {
    await pool.stop();
  }
}
