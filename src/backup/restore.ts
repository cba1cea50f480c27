/**
 * Restore: download -> SHA-256 check while reading -> gunzip -> psql (ON_ERROR_STOP, one
 * transaction) or pg_restore for the custom format. The end of the stream is held back until the
 * checksum matches; on any failure the client program is killed before its input closes, so the
 * transaction never commits and the target is left as it was.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Transform, Writable, pipeline, type TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ExtensionFilter, extensionAlternation } from './extension-filter.js';
import type { TlsSettings } from '../db/tls.js';
import { DbPool } from '../db/pool.js';
import { describeTarget, parseDatabaseUrl } from '../db/url.js';
import { OperatorError, unavailableError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import type { Logger } from '../log/logger.js';
import type { Catalog, GoodBackup } from './catalog.js';
import { libpqEnv, toolMajor, toolPath } from './client-tools.js';
import { parseDataKey } from './naming.js';

export interface RestoreOptions {
  catalog: Catalog;
  logger: Logger;
  ssl: TlsSettings;
  clientBinDir: string | undefined;
  /** The backup to restore: a key, or the newest good backup of `database`. */
  key?: string;
  database?: string;
  targetUrl: string;
  clean?: boolean;
  /**
   * Leave out these extensions (the drill: pg_stat_statements, which only a superuser may create):
   * their statements from a plain script, their entries from pg_restore's list.
   */
  skipExtensions?: string[];
  signal?: AbortSignal;
  progressEveryMs?: number;
}

export interface RestoreResult {
  backup: GoodBackup;
  bytes: number;
  durationSeconds: number;
}

export async function resolveBackup(
  catalog: Catalog,
  key: string | undefined,
  database: string | undefined,
): Promise<GoodBackup> {
  if (key) {
    const found = await catalog.find(key);
    if (typeof found === 'string') {
      throw new OperatorError(`cannot restore ${key}: ${found}`, {
        hint: 'pick a good backup from `pg-maintd backups list`; objects without a manifest are incomplete and never restored',
        // a malformed --key is a usage error; an object that is not a good backup is bad data
        exitCode: parseDataKey(key) ? EXIT.DATAERR : EXIT.USAGE,
      });
    }
    return found;
  }
  if (!database)
    throw new OperatorError('restore needs --key KEY, or --latest with --database DB', {
      exitCode: EXIT.USAGE,
    });
  const latest = await catalog.latest(database);
  if (!latest)
    throw new OperatorError(`no good backup of database "${database}" in ${catalog.storage.description}`, {
      hint: 'run `pg-maintd backup` first',
    });
  return latest;
}

/** Fails at the end of the stream when the bytes do not hash to the expected SHA-256. */
class ChecksumVerifier extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;
  constructor(
    private readonly expected: string,
    private readonly key: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    const actual = this.#hash.digest('hex');
    if (actual === this.expected) return cb();
    cb(
      new OperatorError(
        `checksum mismatch for ${this.key}: the stored object hashes to ${actual}, the manifest says ${this.expected}`,
        {
          hint: 'the object was altered or corrupted in storage; restore another backup (`pg-maintd backups list`)',
          exitCode: EXIT.DATAERR,
        },
      ),
    );
  }
}

/** Tables, views, sequences and foreign tables of the target that no extension owns. */
async function userRelationCount(pool: DbPool): Promise<number> {
  const r = await pool.query<{ n: string }>(`
    SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')`);
  return Number(r.rows[0]!.n);
}

/**
 * A backend whose client was killed goes on with the statement it is running (a long CREATE INDEX)
 * and only then rolls back; end it now, so nothing of the restore holds locks on the target.
 */
async function endSession(o: RestoreOptions, appName: string, log: Logger): Promise<void> {
  const pool = new DbPool(
    { url: o.targetUrl, ssl: o.ssl, pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 } },
    { name: 'restore-cleanup', logger: o.logger },
  );
  try {
    await pool.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
      [appName],
    );
  } catch (err) {
    log.debug({ err: { message: (err as Error).message } }, 'could not end the restore session');
  } finally {
    await pool.stop();
  }
}

export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const backup = await resolveBackup(o.catalog, o.key, o.database);
  const target = parseDatabaseUrl(o.targetUrl);
  const log = o.logger.child({ job: 'restore', key: backup.key, target: describeTarget(target) });
  const pool = new DbPool(
    { url: o.targetUrl, ssl: o.ssl, pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 } },
    { name: 'restore-target', logger: o.logger },
  );
  try {
    const existing = await userRelationCount(pool).catch((err: unknown) => {
      throw unavailableError(err, describeTarget(target), '--target-url') ?? err;
    });
    if (existing > 0 && !o.clean) {
      throw new OperatorError(
        `the target database ${describeTarget(target)} is not empty (${existing} tables, views or sequences): nothing was restored`,
        {
          hint: 'restore into an empty database, or pass --clean to drop and replace the objects the backup contains',
          exitCode: EXIT.DATAERR,
        },
      );
    }
  } finally {
    await pool.stop();
  }

  const started = performance.now();
  const format = backup.manifest.format;
  const args =
    format === 'plain'
      ? [
          '--no-psqlrc',
          '--quiet',
          '--no-password',
          '--set',
          'ON_ERROR_STOP=1',
          '--single-transaction',
          '--output',
          '/dev/null',
        ]
      : [
          '--single-transaction',
          '--exit-on-error',
          '--no-owner',
          '--no-privileges',
          '--no-password',
          ...(o.clean ? ['--clean', '--if-exists'] : []),
          `--dbname=${target.database}`,
        ];
  const tool = format === 'plain' ? 'psql' : 'pg_restore';
  const { major } = await toolMajor(tool, o.clientBinDir);
  let listDir: string | undefined;
  if (format === 'custom' && o.skipExtensions?.length) {
    const toc = await listWithout(o, backup, o.skipExtensions); // before the folder: a failure leaves none
    listDir = mkdtempSync(join(tmpdir(), 'pgmaintd-restore-'));
    const list = join(listDir, 'toc.list');
    writeFileSync(list, toc, { mode: 0o600 });
    args.push(`--use-list=${list}`);
  }
  // Open the backup before starting the client: a store that fails here leaves no child behind.
  const source = await o.catalog.storage.getStream(backup.key, o.signal).catch((err: unknown) => {
    if (listDir) rmSync(listDir, { recursive: true, force: true });
    throw err;
  });
  // A name of its own, so the session can be found and ended if the client is killed mid-statement.
  const appName = `pg-maintd-restore-${randomBytes(4).toString('hex')}`;
  const child = spawn(toolPath(tool, o.clientBinDir), args, {
    env: { ...libpqEnv(target, o.ssl, { clientMajor: major }), PGAPPNAME: appName },
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (err) =>
      reject(
        new OperatorError(`cannot run ${tool}: ${err.message}`, {
          exitCode: EXIT.UNAVAILABLE,
          hint: 'install the PostgreSQL client or set PG_CLIENT_BIN_DIR',
          cause: err,
        }),
      ),
    );
    child.on('close', (code, signal) =>
      code === 0
        ? resolve()
        : reject(
            new OperatorError(
              `${tool} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`,
            ),
          ),
    );
  });
  exited.catch(() => undefined);

  const verifier = new ChecksumVerifier(backup.manifest.sha256, backup.key);
  const gunzip = createGunzip();
  const progress = setInterval(() => {
    const pct = ((verifier.bytes / Math.max(1, backup.size)) * 100).toFixed(1);
    log.info(
      { readBytes: verifier.bytes, totalBytes: backup.size, percent: Number(pct) },
      'restore progress',
    );
  }, o.progressEveryMs ?? 5000);
  progress.unref();
  log.info({ format, tool, sizeBytes: backup.size }, 'restore started');

  const kill = () => {
    // Kill before the input closes: psql would take EOF as the end of the script and COMMIT.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const onAbort = () => {
    kill();
    source.destroy(new OperatorError('restore aborted: pg-maintd is shutting down'));
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // Decompressed SQL goes into the client's stdin, but stdin is not ended by the pipeline: only
    // once every byte is written and the checksum verified may the client see EOF (and COMMIT).
    const stdin = child.stdin!;
    const intoClient = new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (stdin.write(chunk)) cb();
        else stdin.once('drain', () => cb());
      },
      final(cb) {
        cb(); // deliberately not stdin.end()
      },
    });
    let stdinError: Error | undefined;
    stdin.on('error', (err) => (stdinError ??= err)); // EPIPE when the client died
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        kill();
        source.destroy(err);
        reject(err);
      };
      // The client must not exit before its input ends: that is a failure (bad login, SQL error),
      // and waiting for a 'drain' that never comes would hang.
      exited.then(
        () =>
          fail(
            new OperatorError(
              `${tool} exited before the whole backup was sent${stdinError ? ` (${stdinError.message})` : ''}`,
            ),
          ),
        (err: Error) => fail(err),
      );
      const stages: NodeJS.ReadWriteStream[] = [verifier, gunzip];
      if (format === 'plain' && o.skipExtensions?.length) stages.push(new ExtensionFilter(o.skipExtensions));
      pipeline([source, ...stages, intoClient], (err) => {
        if (!err) {
          if (!settled) {
            settled = true;
            resolve();
          }
          return;
        }
        fail(
          err instanceof OperatorError
            ? err
            : new OperatorError(`reading ${backup.key} failed: ${err.message}`, {
                ...(/incorrect header|invalid|unexpected end/i.test(err.message)
                  ? {
                      hint: 'the object is not valid gzip data; restore another backup',
                      exitCode: EXIT.DATAERR,
                    }
                  : {}),
                cause: err,
              }),
        );
      });
    });
    child.stdin!.end(); // only now, with the checksum verified, may the transaction commit
    await exited;
  } catch (err) {
    kill();
    await endSession(o, appName, log);
    log.error(
      { err: { message: (err as Error).message } },
      'restore failed; the target transaction was rolled back',
    );
    throw err;
  } finally {
    clearInterval(progress);
    o.signal?.removeEventListener('abort', onAbort);
    if (listDir) rmSync(listDir, { recursive: true, force: true });
  }
  const durationSeconds = (performance.now() - started) / 1000;
  log.info({ bytes: verifier.bytes, durationSeconds }, 'restore complete');
  return { backup, bytes: verifier.bytes, durationSeconds };
}

/**
 * pg_restore's list of a custom-format backup without the given extensions and their comments, for
 * --use-list. pg_restore reads only the archive's table of contents, at its start, then exits.
 */
async function listWithout(o: RestoreOptions, backup: GoodBackup, extensions: string[]): Promise<string> {
  const source = await o.catalog.storage.getStream(backup.key, o.signal);
  // no connection, so no credentials: an environment of its own, not ours
  const child = spawn(toolPath('pg_restore', o.clientBinDir), ['--list'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  // pg_restore stops reading after the table of contents: the broken pipe that follows is expected
  pipeline(source, createGunzip(), child.stdin!, () => undefined);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  }).finally(() => source.destroy());
  if (code !== 0)
    throw new OperatorError(
      `pg_restore --list of ${backup.key} failed: ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
    );
  const entry = new RegExp(
    `\\b(?:EXTENSION - |COMMENT - EXTENSION )(?:${extensionAlternation(extensions)})(?:\\s|$)`,
  );
  return out
    .split('\n')
    .filter((line) => !entry.test(line))
    .join('\n');
}
