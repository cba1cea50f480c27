/**
 * `pg-maintd restore --globals`: the newest (or a chosen) stored globals, checked against their
 * manifest before anything is read, parsed into the statements pg_dumpall writes (globals-script.ts
 * refuses anything else), and a script written from those run by psql: the roles the target lacks are
 * created with their attributes, settings and memberships in one transaction; roles it has are left as
 * they are; then the tablespaces it lacks. ON_ERROR_STOP: nothing is hidden, and a failure among the
 * roles leaves none of them.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { describeTarget, parseDatabaseUrl } from '../core/database-url.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { DbPool } from '../db/pool.js';
import type { TlsSettings } from '../db/tls.js';
import { unavailableError } from '../db/unavailable.js';
import type { Logger } from '../log/logger.js';
import { libpqEnv, toolMajor, toolPath } from '../programs/client-tools.js';
import type { Catalog } from './catalog.js';
import { storedReader, type BackupReader } from './backup-identity.js';
import { listGlobals, type GoodGlobals } from './globals-catalog.js';
import {
  parseGlobals,
  planGlobals,
  refuse,
  type GlobalsPlan,
  type GlobalsStatement,
} from './globals-script.js';
import { psqlRestrictProblem, RESTORE_SESSION_SQL } from './psql-guard.js';
import { checkedCopy } from './spool.js';

/** pg_dumpall --globals-only of a cluster with many thousand roles stays far below these. */
const MAX_STORED_BYTES = 64 * 1024 ** 2;
const MAX_TEXT_BYTES = 256 * 1024 ** 2;

export interface GlobalsRestoreOptions {
  catalog: Catalog;
  logger: Logger;
  ssl: TlsSettings;
  clientBinDir: string | undefined;
  targetUrl: string;
  /** A globals key (as `backups list --globals` prints it); the newest trusted ones without. */
  key?: string | undefined;
  spoolDir?: string | undefined;
  /** BACKUP_ENCRYPTION_IDENTITY_FILE: needed only for encrypted globals. */
  identityFile?: string | undefined;
  signal?: AbortSignal | undefined;
}

export interface GlobalsRestoreResult extends Omit<GlobalsPlan, 'script'> {
  globals: GoodGlobals;
}

export async function chooseGlobals(catalog: Catalog, key?: string): Promise<GoodGlobals> {
  const listing = await listGlobals(catalog);
  if (key !== undefined) {
    const g = listing.good.find((x) => x.key === key);
    if (g) return g;
    const bad = listing.incomplete.find((x) => x.key === key);
    throw new OperatorError(
      bad ? `the globals ${key} cannot be restored: ${bad.why}` : `no globals stored under "${key}"`,
      { exitCode: EXIT.DATAERR, hint: 'pick globals that `pg-maintd backups list --globals` lists as good' },
    );
  }
  const newest = listing.good.find((g) => !g.suspect);
  if (!newest)
    throw new OperatorError(
      `no good globals in the store${listing.good.length ? ' (only misdated ones)' : ''}: nothing was restored`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'globals are stored with each scheduled backup run (BACKUP_GLOBALS=true); create the roles by hand, or pass --globals-key to pick misdated ones',
      },
    );
  return newest;
}

/** Stored globals read, checked and parsed: nothing of them has reached a server yet. */
export interface PreparedGlobals {
  globals: GoodGlobals;
  statements: GlobalsStatement[];
}

export async function restoreGlobals(o: GlobalsRestoreOptions): Promise<GlobalsRestoreResult> {
  return applyGlobals(o, await prepareGlobals(o));
}

/**
 * The globals chosen, their identity checked, read from a checked copy and parsed, without touching
 * the target: `restore --globals --latest` prepares them, then checks the dump, then applies them.
 */
export async function prepareGlobals(o: GlobalsRestoreOptions): Promise<PreparedGlobals> {
  const globals = await chooseGlobals(o.catalog, o.key);
  if (globals.size > MAX_STORED_BYTES) throw refuse(`${globals.size} bytes, far more than globals ever take`);
  // a missing or wrong identity is refused before anything is read or the target is touched
  const reader = await storedReader(`globals ${globals.key}`, globals.manifest.encryption, o.identityFile);
  const text = await readChecked(o, globals, reader);
  return { globals, statements: parseGlobals(text) };
}

/** Creates the roles and tablespaces of `prepared` that the target's server lacks. */
export async function applyGlobals(
  o: GlobalsRestoreOptions,
  { globals, statements }: PreparedGlobals,
): Promise<GlobalsRestoreResult> {
  const target = parseDatabaseUrl(o.targetUrl);
  const log = o.logger.child({ job: 'restore-globals', target: describeTarget(target) });
  const pool = new DbPool(
    { url: o.targetUrl, ssl: o.ssl, pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 } },
    { name: 'restore-globals', logger: o.logger },
  );
  let plan: GlobalsPlan;
  try {
    const r = await pool
      .query<{ roles: string[]; tablespaces: string[] }>(
        `SELECT ARRAY(SELECT rolname::text FROM pg_catalog.pg_roles) AS roles,
                ARRAY(SELECT spcname::text FROM pg_catalog.pg_tablespace) AS tablespaces`,
      )
      .catch((err: unknown) => {
        throw unavailableError(err, describeTarget(target), '--target-url') ?? err;
      });
    plan = planGlobals(statements, new Set(r.rows[0]!.roles), new Set(r.rows[0]!.tablespaces));
  } finally {
    await pool.stop();
  }
  const result = {
    globals,
    created: plan.created,
    existing: plan.existing,
    tablespaces: plan.tablespaces,
    skipped: plan.skipped,
  };
  if (plan.created.length === 0 && plan.tablespaces.length === 0) {
    log.info(
      { key: globals.key, existing: plan.existing.length },
      'the target has every role and tablespace of the globals already: nothing to do',
    );
    return result;
  }
  await runPsql(o, plan.script, log);
  log.info(
    {
      key: globals.key,
      created: plan.created,
      tablespaces: plan.tablespaces,
      leftAlone: plan.existing,
      skippedStatements: plan.skipped,
    },
    'globals restored',
  );
  return result;
}

/** The object's text, from a private copy whose checksum and size matched the manifest. */
async function readChecked(
  o: GlobalsRestoreOptions,
  globals: GoodGlobals,
  reader: BackupReader,
): Promise<string> {
  const copy = await checkedCopy(o.catalog.storage, globals, { dir: o.spoolDir, signal: o.signal });
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of await reader.compressed(copy.read())) {
      size += (c as Buffer).length;
      if (size > MAX_STORED_BYTES) throw refuse(`more than ${MAX_STORED_BYTES} compressed bytes`);
      chunks.push(c as Buffer);
    }
    let raw: Buffer;
    try {
      raw = gunzipSync(Buffer.concat(chunks), { maxOutputLength: MAX_TEXT_BYTES });
    } catch (err) {
      throw refuse(`not gzip data of at most ${MAX_TEXT_BYTES} bytes (${errorMessage(err)})`);
    }
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      throw refuse('text that is not UTF-8');
    }
  } finally {
    await copy.remove();
  }
}

async function runPsql(o: GlobalsRestoreOptions, script: string, log: Logger): Promise<void> {
  const { major, minor } = await toolMajor('psql', o.clientBinDir);
  const unsafe = psqlRestrictProblem(major, minor);
  if (unsafe)
    throw new OperatorError(`${unsafe}: nothing was restored`, {
      exitCode: EXIT.UNAVAILABLE,
      hint: 'install a current PostgreSQL client (a minor release from August 2025 on) or point PG_CLIENT_BIN_DIR at one',
    });
  const target = parseDatabaseUrl(o.targetUrl);
  const child = spawn(
    toolPath('psql', o.clientBinDir),
    ['--no-psqlrc', '--quiet', '--no-password', '--set', 'ON_ERROR_STOP=1', '--output', '/dev/null'],
    {
      env: { ...libpqEnv(target, o.ssl, { clientMajor: major }), PGAPPNAME: 'pg-maintd-restore-globals' },
      stdio: ['pipe', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (err) =>
      reject(
        new OperatorError(`cannot run psql: ${err.message}`, { exitCode: EXIT.UNAVAILABLE, cause: err }),
      ),
    );
    child.on('close', (code, signal) => {
      if (code === 0) return resolve();
      const tail = stderr.trim().split('\n').slice(-5).join(' | ');
      reject(
        new OperatorError(
          `restoring the globals failed (psql ${signal ? `killed by ${signal}` : `exited with code ${code}`}): ${tail}`,
          {
            hint: /permission denied|must be superuser|must have CREATEROLE/i.test(stderr)
              ? 'the role of --target-url must be able to create these roles (CREATEROLE; a superuser for SUPERUSER, REPLICATION or BYPASSRLS roles and for tablespaces)'
              : 'no role of the failed transaction was created; a tablespace fails when its folder is missing on the new server: create it (owned by postgres) and run restore --globals again',
          },
        ),
      );
    });
  });
  exited.catch(() => undefined);
  // psql in restricted mode under a key nothing else knows: the script is this module's, but no
  // meta-command could run even if a name or string ever broke out of its quoting
  child.stdin.on('error', () => undefined);
  child.stdin.end(`\\restrict ${randomBytes(24).toString('hex')}\n${RESTORE_SESSION_SQL}${script}`);
  try {
    await exited;
  } catch (err) {
    log.error({ err: { message: errorMessage(err) } }, 'restoring the globals failed');
    throw err;
  }
}
