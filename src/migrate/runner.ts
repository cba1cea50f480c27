/**
 * The migration runner: `up`, `status`, `verify` and `baseline` over the files of MIGRATIONS_DIR.
 *
 * - One runner at a time: a session-level advisory lock, taken by polling pg_try_advisory_lock (a
 *   blocked pg_advisory_lock would deadlock against CREATE INDEX CONCURRENTLY, which waits for every
 *   older transaction, the waiting runner's included).
 * - Each migration in its own transaction, recorded in the same transaction; a no-transaction one
 *   (a single CREATE INDEX CONCURRENTLY) runs alone and is recorded after it succeeds.
 * - An INVALID index left by a failed concurrent build is dropped and built again; a valid one is kept.
 * - An applied migration whose file changed stops the run, naming the file: never re-run or ignored.
 * - A database that holds the tables but no history is not touched: `migrate baseline` adopts it.
 */
import type pg from 'pg';
import { DbPool, type PoolSettings } from '../db/pool.js';
import { classify } from '../db/sqlstate.js';
import { OperatorError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import type { Logger } from '../log/logger.js';
import { advisoryUnlock, tryAdvisoryLock } from '../schedule/leader.js';
import { concurrentIndexName, createdTables, loadMigrations, type MigrationFile } from './files.js';

const HISTORY_TABLE = 'public.pgmaintd_migrations';

const HISTORY_DDL = `
  CREATE TABLE IF NOT EXISTS ${HISTORY_TABLE} (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    baselined   boolean NOT NULL DEFAULT false
  )`;

export interface MigrateOptions {
  db: PoolSettings;
  dir: string;
  logger: Logger;
  /** How long to wait for another runner's lock. */
  lockWaitMs: number;
  /** lock_timeout of every migration statement, so DDL never queues the application behind it for long. */
  lockTimeoutMs: number;
  signal?: AbortSignal;
}

export interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: Date;
  duration_ms: number;
  baselined: boolean;
}

export type MigrationState = 'applied' | 'pending' | 'changed' | 'missing_file';

export interface StatusRow {
  version: number;
  name: string;
  state: MigrationState;
  appliedAt?: Date;
  durationMs?: number;
  baselined?: boolean;
}

export interface UpResult {
  applied: Array<{ file: string; durationMs: number; note?: string }>;
  /** Invalid indexes dropped and built again. */
  repaired: string[];
  waitedForLock: boolean;
}

const LOCK_NAME = 'migrate';

/** Runs `fn` on one session holding the migration lock. */
async function withRunnerSession<T>(
  o: MigrateOptions,
  fn: (c: pg.PoolClient, waited: boolean) => Promise<T>,
): Promise<T> {
  // a bounded connect: an unreachable server is reported (and retried by the bootstrap) in seconds;
  // the second connection is only ever used to cancel the runner's statement on shutdown
  const pool = new DbPool(o.db, {
    name: 'migrate',
    logger: o.logger,
    max: 2,
    min: 0,
    acquireTimeoutMs: 10_000,
  });
  try {
    const client = await pool.connect();
    const stopCancelling = cancelOnAbort(pool, client, o);
    let locked = false;
    try {
      const waited = await acquire(client, o);
      locked = true;
      return await fn(client, waited);
    } finally {
      stopCancelling();
      if (locked) await advisoryUnlock(client, LOCK_NAME).catch(() => undefined);
      client.release();
    }
  } finally {
    await pool.stop();
  }
}

/**
 * On abort (shutdown), cancels the runner's running statement so its transaction rolls back now
 * rather than after the statement ends: a backend does not notice a vanished client while it works.
 * Repeated each second, since a cancel that lands between two statements does nothing.
 */
function cancelOnAbort(pool: DbPool, client: pg.PoolClient, o: MigrateOptions): () => void {
  const pid = (client as unknown as { processID?: number }).processID;
  let timer: NodeJS.Timeout | undefined;
  const cancel = () => {
    pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
  };
  const onAbort = () => {
    o.logger.warn('shutting down: cancelling the running migration statement; it is rolled back');
    cancel();
    timer = setInterval(cancel, 1000);
    timer.unref();
  };
  if (pid === undefined || !o.signal) return () => undefined;
  if (o.signal.aborted) onAbort();
  else o.signal.addEventListener('abort', onAbort, { once: true });
  return () => {
    o.signal?.removeEventListener('abort', onAbort);
    clearInterval(timer);
  };
}

async function acquire(client: pg.PoolClient, o: MigrateOptions): Promise<boolean> {
  const until = Date.now() + o.lockWaitMs;
  let waited = false;
  for (;;) {
    if (await tryAdvisoryLock(client, LOCK_NAME)) return waited;
    if (!waited) o.logger.info('another runner is migrating this database; waiting for it to finish');
    waited = true;
    if (o.signal?.aborted) throw o.signal.reason as Error;
    if (Date.now() > until)
      throw new OperatorError(`another migration runner held the lock for over ${o.lockWaitMs} ms`, {
        hint: 'wait for it to finish (see pg_locks for the advisory lock holder), or raise MIGRATE_LOCK_WAIT',
        exitCode: EXIT.UNAVAILABLE,
      });
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function readHistory(client: pg.PoolClient): Promise<AppliedRow[] | undefined> {
  const exists = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [
    HISTORY_TABLE,
  ]);
  if (!exists.rows[0]!.t) return undefined;
  const r = await client.query<AppliedRow>(
    `SELECT version, name, checksum, applied_at, duration_ms, baselined FROM ${HISTORY_TABLE} ORDER BY version`,
  );
  return r.rows;
}

/** Applied migrations whose file changed or is gone: a run must not go on over them. */
function integrityProblems(files: MigrationFile[], applied: AppliedRow[], dir: string): string[] {
  const problems: string[] = [];
  for (const row of applied) {
    const f = files.find((x) => x.version === row.version);
    const label = `${String(row.version).padStart(4, '0')}_${row.name}.sql`;
    if (!f) problems.push(`${label} was applied but is not in ${dir}`);
    else if (f.checksum !== row.checksum)
      problems.push(
        `${f.file} was changed after it was applied (checksum ${row.checksum.slice(0, 12)}… applied, ${f.checksum.slice(0, 12)}… now)`,
      );
  }
  return problems;
}

function refuseChanged(problems: string[]): never {
  throw new OperatorError(`applied migrations do not match their files:\n  ${problems.join('\n  ')}`, {
    hint: 'restore the file as it was applied (git history); to change the schema, add a new migration',
    exitCode: EXIT.DATAERR,
  });
}

/** Existing tables among those the pending migrations would create. */
async function existingTables(client: pg.PoolClient, pending: MigrationFile[]): Promise<string[]> {
  const names = [...new Set(pending.flatMap((f) => createdTables(f.sql)))];
  if (names.length === 0) return [];
  const r = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname = ANY($1) ORDER BY 1`,
    [names],
  );
  return r.rows.map((x) => x.name);
}

export async function migrateUp(o: MigrateOptions): Promise<UpResult> {
  const files = loadMigrations(o.dir);
  return withRunnerSession(o, async (client, waitedForLock) => {
    const history = await readHistory(client);
    const applied = history ?? [];
    const problems = integrityProblems(files, applied, o.dir);
    if (problems.length) refuseChanged(problems);
    const pending = files.filter((f) => !applied.some((a) => a.version === f.version));
    const result: UpResult = { applied: [], repaired: [], waitedForLock };
    if (pending.length === 0) return result;

    if (applied.length === 0) {
      const found = await existingTables(client, pending);
      if (found.length)
        throw new OperatorError(
          `the database already holds ${found.join(', ')} but has no migration history: nothing was changed`,
          {
            hint: 'if this schema is the one the migrations build, adopt it with `pg-maintd migrate baseline`; otherwise point DATABASE_URL at another database',
            exitCode: EXIT.DATAERR,
          },
        );
    }
    await client.query(HISTORY_DDL);
    for (const f of pending) {
      if (o.signal?.aborted) throw o.signal.reason as Error;
      const t0 = performance.now();
      o.logger.info({ migration: f.file, transactional: f.transactional }, 'applying migration');
      const note = f.transactional
        ? await runInTransaction(client, f, o)
        : await runAlone(client, f, o, result);
      const durationMs = Math.round(performance.now() - t0);
      if (!f.transactional) await record(client, f, durationMs);
      result.applied.push({ file: f.file, durationMs, ...(note ? { note } : {}) });
      o.logger.info({ migration: f.file, durationMs, note }, 'migration applied');
    }
    return result;
  });
}

async function record(client: pg.PoolClient, f: MigrationFile, durationMs: number, baselined = false) {
  await client.query(
    `INSERT INTO ${HISTORY_TABLE} (version, name, checksum, duration_ms, baselined) VALUES ($1, $2, $3, $4, $5)`,
    [f.version, f.name, f.checksum, durationMs, baselined],
  );
}

async function runInTransaction(
  client: pg.PoolClient,
  f: MigrationFile,
  o: MigrateOptions,
): Promise<undefined> {
  const t0 = performance.now();
  await client.query('BEGIN');
  try {
    await client.query(`SET LOCAL lock_timeout = ${Math.round(o.lockTimeoutMs)}`);
    await client.query(f.sql);
    await record(client, f, Math.round(performance.now() - t0));
    // a shutdown that came while the statement ran (and a cancel missed it) still rolls back
    if (o.signal?.aborted) throw o.signal.reason as Error;
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (o.signal?.aborted) throw interrupted(f, err);
    throw failed(f, err, 'rolled back: nothing of it was applied or recorded');
  }
  return undefined;
}

/** A no-transaction migration: one statement; an invalid index from an earlier failed build is rebuilt. */
async function runAlone(
  client: pg.PoolClient,
  f: MigrationFile,
  o: MigrateOptions,
  result: UpResult,
): Promise<string | undefined> {
  await client.query(`SET lock_timeout = ${Math.round(o.lockTimeoutMs)}`);
  try {
    const index = concurrentIndexName(f.sql);
    if (index) {
      const r = await client.query<{ valid: boolean; qualified: string }>(
        `SELECT i.indisvalid AS valid, format('%I.%I', n.nspname, c.relname) AS qualified
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())`,
        [index.name, index.schema ?? null],
      );
      const found = r.rows[0];
      if (found?.valid) return `index ${found.qualified} already exists and is valid: kept`;
      if (found) {
        o.logger.warn(
          { migration: f.file, index: found.qualified },
          'dropping the INVALID index a failed concurrent build left, to build it again',
        );
        await client.query(`DROP INDEX CONCURRENTLY IF EXISTS ${found.qualified}`);
        result.repaired.push(found.qualified);
      }
    }
    try {
      await client.query(f.sql);
    } catch (err) {
      if (o.signal?.aborted) throw interrupted(f, err);
      throw failed(
        f,
        err,
        index
          ? `index ${index.name} may be left INVALID; fix the cause and run again: the next run drops and rebuilds it`
          : 'it ran outside a transaction: check what it left before running again',
      );
    }
    return undefined;
  } finally {
    await client.query('RESET lock_timeout').catch(() => undefined);
  }
}

/** A migration stopped by a shutdown: not a fault of the file, and nothing of it was recorded. */
function interrupted(f: MigrationFile, err: unknown): OperatorError {
  return new OperatorError(
    `migration ${f.file} was interrupted by the shutdown: ${f.transactional ? 'rolled back, nothing of it was applied or recorded' : 'not recorded; an INVALID index it left is rebuilt by the next run'}`,
    { hint: 'run it again', cause: err },
  );
}

function failed(f: MigrationFile, err: unknown, what: string): OperatorError {
  const { code, kind } = classify(err);
  const e = err as { message?: string; position?: string };
  const line = e.position ? f.sql.slice(0, Number(e.position)).split('\n').length : undefined;
  const hint =
    kind === 'lock_timeout'
      ? 'another session held a lock for longer than MIGRATE_LOCK_TIMEOUT; run again later, or raise MIGRATE_LOCK_TIMEOUT'
      : `fix ${f.file} (or the data it trips over) and run again`;
  return new OperatorError(
    `migration ${f.file} failed${line ? ` at line ${line}` : ''}: ${e.message ?? String(err)}${code ? ` (SQLSTATE ${code})` : ''}; ${what}`,
    { hint, exitCode: EXIT.DATAERR, cause: err },
  );
}

export async function migrationStatus(o: MigrateOptions): Promise<StatusRow[]> {
  const files = loadMigrations(o.dir);
  return withReadSession(o, async (client) => statusRows(files, (await readHistory(client)) ?? []));
}

/** A one-connection session for the read-only commands (status, verify); no lock taken. */
async function withReadSession<T>(o: MigrateOptions, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const pool = new DbPool(o.db, { name: 'migrate', logger: o.logger, max: 1, min: 0 });
  try {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  } finally {
    await pool.stop();
  }
}

function statusRows(files: MigrationFile[], applied: AppliedRow[]): StatusRow[] {
  const rows: StatusRow[] = [];
  for (const f of files) {
    const a = applied.find((x) => x.version === f.version);
    rows.push({
      version: f.version,
      name: f.name,
      state: !a ? 'pending' : a.checksum === f.checksum ? 'applied' : 'changed',
      ...(a ? { appliedAt: a.applied_at, durationMs: a.duration_ms, baselined: a.baselined } : {}),
    });
  }
  for (const a of applied)
    if (!files.some((f) => f.version === a.version))
      rows.push({
        version: a.version,
        name: a.name,
        state: 'missing_file',
        appliedAt: a.applied_at,
        durationMs: a.duration_ms,
        baselined: a.baselined,
      });
  return rows.sort((x, y) => x.version - y.version);
}

export interface VerifyResult {
  ok: boolean;
  problems: string[];
  pending: string[];
}

/** Applied migrations match their files, and no index a migration builds is left INVALID. */
export async function verifyMigrations(o: MigrateOptions): Promise<VerifyResult> {
  const files = loadMigrations(o.dir);
  return withReadSession(o, async (client) => {
    const applied = (await readHistory(client)) ?? [];
    const problems = integrityProblems(files, applied, o.dir);
    const indexes = files.flatMap((f) => {
      const i = concurrentIndexName(f.sql);
      return i && applied.some((a) => a.version === f.version) ? [i.name] : [];
    });
    if (indexes.length) {
      const r = await client.query<{ name: string; valid: boolean }>(
        `SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE c.relname = ANY($1)`,
        [indexes],
      );
      for (const name of indexes) {
        const row = r.rows.find((x) => x.name === name);
        if (!row) problems.push(`index ${name} was recorded as built but does not exist`);
        else if (!row.valid) problems.push(`index ${name} is INVALID`);
      }
    }
    const pending = files.filter((f) => !applied.some((a) => a.version === f.version)).map((f) => f.file);
    return { ok: problems.length === 0, problems, pending };
  });
}

/** Adopts a database that already holds the schema: records the migrations up to `to` as applied, running none. */
export async function baselineMigrations(o: MigrateOptions, to?: number): Promise<string[]> {
  const files = loadMigrations(o.dir).filter((f) => to === undefined || f.version <= to);
  return withRunnerSession(o, async (client) => {
    const history = await readHistory(client);
    if (history?.length)
      throw new OperatorError(`the database already has a migration history (${history.length} applied)`, {
        hint: 'baseline is for a database without one; use `pg-maintd migrate status` and `migrate up`',
        exitCode: EXIT.DATAERR,
      });
    const wanted = [...new Set(files.flatMap((f) => createdTables(f.sql)))];
    const found = await existingTables(client, files);
    const missing = wanted.filter((t) => !found.includes(t));
    if (missing.length)
      throw new OperatorError(`cannot baseline: the database lacks ${missing.join(', ')}`, {
        hint: 'baseline adopts a schema that exists; for an empty database run `pg-maintd migrate up`',
        exitCode: EXIT.DATAERR,
      });
    await client.query('BEGIN');
    try {
      await client.query(HISTORY_DDL);
      for (const f of files) await record(client, f, 0, true);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    return files.map((f) => f.file);
  });
}
