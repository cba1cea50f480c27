/**
 * Restore: the object is pinned and its SHA-256 checked before anything of it runs; then it is read
 * again -> SHA-256 check while reading -> gunzip -> psql in restricted mode (ON_ERROR_STOP, one
 * transaction) or pg_restore for the custom format. The end of the stream is held back until the
 * checksum matches; on any failure the client program is killed before its input closes, so the
 * transaction never commits and the target is left as it was.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { backupReader, type BackupReader } from './backup-identity.js';
import { ExtensionFilter } from './extension-filter.js';
import type { TlsSettings } from '../db/tls.js';
import { LEASE_SCHEMA } from '../db/lease-table.js';
import { DbPool } from '../db/pool.js';
import { describeTarget, parseDatabaseUrl } from '../core/database-url.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { unavailableError } from '../db/unavailable.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import type { Catalog, GoodBackup } from './catalog.js';
import { ChecksumVerifier } from './checksum.js';
import { resolveBackup, type ChoiceOptions } from './choose.js';
import { dbnameConninfo, libpqEnv, sessionOptions, toolMajor, toolPath } from '../programs/client-tools.js';
import { psqlRestrictProblem, RestrictGuard } from './psql-guard.js';
import { listWithout } from './restore-list.js';
import { printable } from './naming.js';
import { ownershipOf } from './manifest.js';
import { checkedCopy, type CheckedCopy } from './spool.js';
import { estimateProgress } from './progress.js';

export { resolveBackup, type ChoiceOptions } from './choose.js';

/** A restore that stopped at a role the target's server lacks (the cluster's globals hold it). */
export class MissingRoleError extends OperatorError {
  constructor(
    readonly role: string,
    message: string,
    opts: ConstructorParameters<typeof OperatorError>[1],
  ) {
    super(message, opts);
  }
}

/**
 * A restore that stopped at an `ALTER ... OWNER TO` the restoring role may not run: the dump keeps its
 * owners (BACKUP_OWNERSHIP=keep), and only a superuser or a member of the owner role may give it away.
 */
export class OwnershipError extends OperatorError {
  constructor(
    readonly role: string,
    message: string,
    opts: ConstructorParameters<typeof OperatorError>[1],
  ) {
    super(message, opts);
  }
}

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
   * Restore without the dump's owners and GRANTs: everything is owned by the restoring role (a
   * drill's, or a server without the roles). Only pg_restore can leave them out: a plain dump that
   * holds them is refused.
   */
  noOwner?: boolean;
  /**
   * Leave out these extensions (the drill: pg_stat_statements, which only a superuser may create):
   * their statements from a plain script, their entries from pg_restore's list.
   */
  skipExtensions?: string[];
  signal?: AbortSignal;
  progressEveryMs?: number;
  /** How the backup is chosen and what it must be (signature, cluster). */
  choice?: ChoiceOptions;
  /** Where the checked copy of the backup is kept while it is restored (RESTORE_SPOOL_DIR). */
  spoolDir?: string | undefined;
  /** BACKUP_ENCRYPTION_IDENTITY_FILE: needed only for an encrypted backup. */
  identityFile?: string | undefined;
  /**
   * Runs once every check passed (the identity opens the backup, the target is empty or --clean,
   * the checked copy is ready), right before the client: `restore --globals` creates the roles here,
   * so a backup that cannot be restored leaves the target's server without them.
   */
  beforeClient?: ((backup: GoodBackup) => Promise<void>) | undefined;
}

export interface RestoreResult {
  backup: GoodBackup;
  bytes: number;
  durationSeconds: number;
}

/** Output chunk of the decompressor: measured in bench/restore.mjs. */
const GUNZIP_CHUNK = 256 * 1024;

/** What the server says (the clients run with LANG=C.UTF-8) when a statement names a role it lacks. */
const MISSING_ROLE = /role "((?:[^"]|"")+)" does not exist/;

/** What the server says (15: member of; 16 on: SET ROLE) when the restoring role may not give an object to the owner. */
const NOT_OWNER_MEMBER =
  /must be (?:a )?member of role "((?:[^"]|"")+)"|must be able to SET ROLE "((?:[^"]|"")+)"/;

/** What psql says when restricted mode refused a meta-command, or a guessed key to leave it. */
const RESTRICTED = /backslash commands are restricted|\\unrestrict: wrong key/;

/** Tables, views, sequences and foreign tables of the target that no extension owns; its version. */
async function inspectTarget(pool: DbPool): Promise<{ relations: number; versionNum: number }> {
  const r = await pool.query<{ n: string; v: string }>(`
    SELECT count(*) AS n, current_setting('server_version_num') AS v
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${LEASE_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')`);
  return { relations: Number(r.rows[0]!.n), versionNum: Number(r.rows[0]!.v) };
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
    log.debug({ err: { message: errorMessage(err) } }, 'could not end the restore session');
  } finally {
    await pool.stop();
  }
}

export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const target = parseDatabaseUrl(o.targetUrl);
  const log = o.logger.child({ job: 'restore', target: describeTarget(target) });
  const backup = await resolveBackup(o.catalog, o.key, o.database, o.choice, log);
  // an encrypted backup without a matching identity stops here, before the target is even looked at
  const reader = await backupReader(backup, o.identityFile);
  const pool = new DbPool(
    { url: o.targetUrl, ssl: o.ssl, pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 } },
    { name: 'restore-target', logger: o.logger },
  );
  let versionNum: number;
  try {
    const { relations: existing, versionNum: v } = await inspectTarget(pool).catch((err: unknown) => {
      throw unavailableError(err, describeTarget(target), '--target-url') ?? err;
    });
    versionNum = v;
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
  const ownership = ownershipOf(backup.manifest);
  if (o.noOwner && format === 'plain' && ownership === 'keep')
    // its ALTER ... OWNER TO and GRANT statements are SQL among the rest (function bodies may hold
    // the same words): leaving them out of the script is guesswork, never done to a restore
    throw new OperatorError(
      `${printable(backup.key)} is a plain SQL dump that holds its owners and GRANTs: --no-owner cannot leave them out of it; nothing was restored`,
      {
        exitCode: EXIT.USAGE,
        hint: "restore the cluster's roles first and restore without --no-owner (pg-maintd restore --globals --latest ...), or take dumps with BACKUP_FORMAT=custom, which pg_restore can restore without owners",
      },
    );
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
          // an archive always records its owners: those of a dump taken without them are left out
          ...(o.noOwner || ownership === 'omit' ? ['--no-owner', '--no-privileges'] : []),
          '--no-password',
          ...(o.clean ? ['--clean', '--if-exists'] : []),
          // the database the check above looked at, never one a name holding "=" points to
          `--dbname=${dbnameConninfo(target.database)}`,
        ];
  const tool = format === 'plain' ? 'psql' : 'pg_restore';
  const { major, minor } = await toolMajor(tool, o.clientBinDir);
  const unsafe = format === 'plain' ? psqlRestrictProblem(major, minor) : undefined;
  if (unsafe)
    throw new OperatorError(`${unsafe}: nothing was restored`, {
      exitCode: EXIT.UNAVAILABLE,
      hint: 'install a current PostgreSQL client (a minor release from August 2025 on) or point PG_CLIENT_BIN_DIR at one',
    });
  // whoever can write to the store could have replaced the data under a good manifest: nothing of
  // it may run before it is known to be the object the manifest describes, and what runs is that copy
  log.info(
    { key: backup.key, sizeBytes: backup.size },
    "checking the backup's checksum before anything of it runs",
  );
  const copy = await checkedCopy(o.catalog.storage, backup, { dir: o.spoolDir, signal: o.signal });
  try {
    await o.beforeClient?.(backup);
    return await runClient(o, { backup, copy, reader, args, tool, major, versionNum, started, log });
  } finally {
    await copy.remove();
  }
}

interface ClientRun {
  backup: GoodBackup;
  copy: CheckedCopy;
  reader: BackupReader;
  args: string[];
  tool: 'psql' | 'pg_restore';
  major: number;
  versionNum: number;
  started: number;
  log: Logger;
}

/** Feeds the checked backup to psql or pg_restore; the transaction commits only once the bytes hashed right again. */
async function runClient(o: RestoreOptions, r: ClientRun): Promise<RestoreResult> {
  const { backup, copy, reader, args, tool, major, versionNum, started, log } = r;
  const format = backup.manifest.format;
  const target = parseDatabaseUrl(o.targetUrl);
  let listDir: string | undefined;
  if (format === 'custom' && o.skipExtensions?.length) {
    // before the folder: a failure leaves none
    const toc = await listWithout(
      await reader.compressed(copy.read()),
      backup.key,
      o.clientBinDir,
      o.skipExtensions,
    );
    listDir = mkdtempSync(join(tmpdir(), 'pgmaintd-restore-'));
    const list = join(listDir, 'toc.list');
    writeFileSync(list, toc, { mode: 0o600 });
    args.push(`--use-list=${list}`);
  }
  const source = copy.read();
  const verifier = new ChecksumVerifier(backup.manifest.sha256, backup.key);
  // An encrypted copy is checked, then decrypted: its header is opened here, before the client runs,
  // so a wrong identity (or a manifest that lied about the recipients) has touched nothing.
  let input: NodeJS.ReadableStream = source;
  let checks: NodeJS.ReadWriteStream[] = [verifier];
  if (reader.identities) {
    const checked = pipeline(source, verifier, () => undefined);
    try {
      input = await reader.compressed(checked);
    } catch (err) {
      if (listDir) rmSync(listDir, { recursive: true, force: true });
      throw err;
    }
    checks = [];
  }
  // A name of its own, so the session can be found and ended if the client is killed mid-statement.
  const appName = `pg-maintd-restore-${randomBytes(4).toString('hex')}`;
  const child = spawn(toolPath(tool, o.clientBinDir), args, {
    env: {
      ...libpqEnv(target, o.ssl, { clientMajor: major }),
      PGAPPNAME: appName,
      PGOPTIONS: sessionOptions(versionNum),
    },
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
    child.on('close', (code, signal) => {
      if (code === 0) return resolve();
      if (RESTRICTED.test(stderr))
        return reject(
          new OperatorError(
            `the backup's script holds a psql meta-command, which a restore never runs (psql is in restricted mode): nothing was restored`,
            {
              exitCode: EXIT.DATAERR,
              hint: 'pg_dump writes none but \\restrict: someone who can write to the store altered it. Restore another backup, find out who can write there, and set BACKUP_SIGNING_KEY_FILE',
            },
          ),
        );
      const how = `${tool} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`;
      const role = MISSING_ROLE.exec(stderr)?.[1];
      if (role !== undefined)
        // a dump holds no roles (only names them as owners, grantees, in policies): the cluster's
        // globals, stored with each scheduled run, do
        return reject(
          new MissingRoleError(
            role,
            `the backup names the role "${printable(role)}", which the target's server does not have: nothing was restored (${how})`,
            {
              exitCode: EXIT.DATAERR,
              hint: `create the cluster's roles first: pg-maintd restore --globals --target-url <the same URL> (or add --globals to this restore)${format === 'custom' && !o.noOwner ? '; or pass --no-owner to restore without owners and GRANTs' : ''}`,
            },
          ),
        );
      const owner = NOT_OWNER_MEMBER.exec(stderr);
      if (owner)
        return reject(
          new OwnershipError(
            owner[1] ?? owner[2]!,
            `the backup gives objects to the role "${printable(owner[1] ?? owner[2]!)}", and the restoring role may not act as it: nothing was restored (${how})`,
            {
              exitCode: EXIT.DATAERR,
              hint: `restore as a superuser or a member of that role${format === 'custom' ? ', or pass --no-owner to make the restoring role the owner of everything' : ''}`,
            },
          ),
        );
      reject(new OperatorError(`${how}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
  exited.catch(() => undefined);

  // zlib's 16 KiB default output chunks cost twice the CPU here and hand psql small writes
  const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK });
  const readFrom = performance.now();
  const progress = setInterval(() => {
    log.info(
      {
        readBytes: verifier.bytes,
        totalBytes: backup.size,
        ...estimateProgress(verifier.bytes, backup.size, performance.now() - readFrom),
      },
      'restore progress',
    );
  }, o.progressEveryMs ?? 5000);
  progress.unref();
  log.info({ key: backup.key, format, tool, sizeBytes: backup.size }, 'restore started');

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
      const stages: NodeJS.ReadWriteStream[] = [...checks, gunzip];
      if (format === 'plain' && o.skipExtensions?.length) stages.push(new ExtensionFilter(o.skipExtensions));
      if (format === 'plain') stages.push(new RestrictGuard());
      pipeline([input, ...stages, intoClient], (err) => {
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
      { err: { message: errorMessage(err) } },
      'restore failed; the target transaction was rolled back',
    );
    throw err;
  } finally {
    clearInterval(progress);
    o.signal?.removeEventListener('abort', onAbort);
    if (listDir) rmSync(listDir, { recursive: true, force: true });
  }
  // a client that exits 0 has committed what it read; that the backup's tables are all there is
  // checked apart, so a restore that somehow brought less is never reported as done
  // (an extension left out takes its tables with it: then there is nothing to compare)
  const missing = o.skipExtensions?.length
    ? []
    : await missingTables(o, Object.keys(backup.manifest.rowCounts));
  if (missing.length) {
    log.error({ key: backup.key, missing }, "restore finished without some of the backup's tables");
    throw new OperatorError(
      `${tool} finished, but ${missing.length} of the backup's tables are not in ${describeTarget(target)}: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`,
      { hint: 'do not rely on this target: drop it and restore again, or restore another backup' },
    );
  }
  const durationSeconds = (performance.now() - started) / 1000;
  log.info({ key: backup.key, bytes: verifier.bytes, durationSeconds }, 'restore complete');
  return { backup, bytes: verifier.bytes, durationSeconds };
}

/** The backup's tables (as the manifest names them, quoted) that the target does not hold. */
async function missingTables(o: RestoreOptions, tables: string[]): Promise<string[]> {
  if (tables.length === 0) return [];
  const pool = new DbPool(
    { url: o.targetUrl, ssl: o.ssl, pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 } },
    { name: 'restore-target', logger: o.logger },
  );
  try {
    const r = await pool.query<{ name: string }>(
      'SELECT t.name FROM pg_catalog.unnest($1::text[]) AS t(name) WHERE pg_catalog.to_regclass(t.name) IS NULL',
      [tables],
    );
    return r.rows.map((x) => x.name);
  } finally {
    await pool.stop();
  }
}
