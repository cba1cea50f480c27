/**
 * The migration runner: `up`, `status`, `verify` and `baseline` over the files of MIGRATIONS_DIR.
 *
 * - One runner at a time: an advisory lock whose holder is named (runner-session.ts). The sessions
 *   a migration statement waits for (pg_blocking_pids) are named too, in the error when it gives
 *   up at MIGRATE_LOCK_TIMEOUT and through `onWait` while it waits.
 * - Each migration in its own transaction, recorded in the same transaction; a no-transaction one
 *   (a single CREATE INDEX CONCURRENTLY) runs alone and is recorded after it succeeds.
 * - An INVALID index left by a failed concurrent build is dropped and built again; a valid one is kept.
 * - An applied migration whose file changed stops the run, naming the file: never re-run or ignored.
 * - A database that holds the tables but no history is not touched: `migrate baseline` adopts it.
 * - With `onlyIntoEmpty` (the start-up migrations), neither is a database that holds anything else
 *   and no history: `migrate up` by hand builds the schema there, `migrate baseline` adopts it.
 * - The files run only in a schema no other login role could plant a function, operator or trigger
 *   in (schema-trust.ts): PostgreSQL would pick a better-matching one there over pg_catalog's.
 */
import type pg from 'pg';
import { sessionsText, type SessionInfo } from '../db/sessions.js';
import { loginRolesReaching } from '../db/role-reach.js';
import { classify } from '../db/sqlstate.js';
import { errorMessage, OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { MigrationError, type BlockedReason, type FailedReason } from './migration-error.js';
import {
  watched,
  withReadSession,
  withRunnerSession,
  type MigrateOptions,
  type RunnerSession,
} from './runner-session.js';
import { checkReadSchemaOwner, checkSchemaTrust } from './schema-trust.js';
import { userObjects } from './empty-database.js';
import { LEASE_SCHEMA } from '../db/lease-table.js';
import { concurrentIndexName, createdTables, loadMigrations, type MigrationFile } from './files.js';

export type { MigrateOptions, MigrationWait } from './runner-session.js';

const HISTORY_TABLE = 'public.pgmaintd_migrations';
const HISTORY = { schema: 'public', table: 'pgmaintd_migrations' };
/** The schema the migration files build in: named, never the role's search_path (whose "$user" may
 * be a schema of pg-maintd's own, such as its leases'). */
const APP_SCHEMA = 'public';
/** Schemas the files call into when they exist: 0007 uses Supabase's auth.uid(). */
const READ_SCHEMAS = ['auth'];

const HISTORY_DDL = `
  CREATE TABLE IF NOT EXISTS ${HISTORY_TABLE} (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    baselined   boolean NOT NULL DEFAULT false
  )`;

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

// who owns the history and who else may change it: a history another role can write (or made)
// could claim migrations applied that never were, or run its policies or triggers as pg-maintd's
// role. Roles that log in count, with what they inherit or can SET ROLE to (a member of
// pg_write_all_data, say); the owner's members act as the owner.
const HISTORY_TRUST_SQL = `
  SELECT c.relkind::text AS kind, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
         pg_catalog.pg_has_role(c.relowner, 'MEMBER') OR r.rolsuper AS owner_ok,
         c.relforcerowsecurity AS forced,
         ${loginRolesReaching(
           (g) =>
             `pg_catalog.has_table_privilege(${g}, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER')
              OR pg_catalog.has_any_column_privilege(${g}, c.oid, 'INSERT, UPDATE')`,
           (o) => `${o} = c.relowner OR pg_catalog.pg_has_role(${o}, c.relowner, 'MEMBER')`,
         )} AS writers
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
   WHERE c.oid = pg_catalog.to_regclass($1)`;

async function readHistory(client: pg.PoolClient): Promise<AppliedRow[] | undefined> {
  const t = await client.query<{
    kind: string;
    owner: string;
    owner_ok: boolean;
    forced: boolean;
    writers: string[];
  }>(HISTORY_TRUST_SQL, [HISTORY_TABLE]);
  const trust = t.rows[0];
  if (!trust) return undefined;
  const problem =
    trust.kind !== 'r'
      ? `is not a plain table (relkind ${trust.kind})`
      : !trust.owner_ok
        ? `belongs to ${trust.owner}, a role pg-maintd's role is not`
        : trust.forced
          ? 'forces row-level security on its owner'
          : trust.writers.length
            ? `may be changed by ${trust.writers.join(', ')}`
            : undefined;
  if (problem)
    throw new MigrationError(
      'history_untrusted',
      `the migration history ${HISTORY_TABLE} ${problem}: it is not trusted, and nothing was applied`,
      {
        hint: `only the role that applies the migrations may own and write it: ALTER TABLE ${HISTORY_TABLE} OWNER TO <that role>; REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ${HISTORY_TABLE} FROM <the others> (or drop a table someone else made)`,
        exitCode: EXIT.DATAERR,
      },
    );
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
  throw new MigrationError(
    'changed_file',
    `applied migrations do not match their files:\n  ${problems.join('\n  ')}`,
    {
      hint: 'restore the file as it was applied (git history); to change the schema, add a new migration',
      exitCode: EXIT.DATAERR,
    },
  );
}

/** Existing tables among those the pending migrations would create. */
async function existingTables(client: pg.PoolClient, pending: MigrationFile[]): Promise<string[]> {
  const names = [...new Set(pending.flatMap((f) => createdTables(f.sql)))];
  if (names.length === 0) return [];
  const r = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = '${APP_SCHEMA}' AND c.relkind IN ('r', 'p') AND c.relname = ANY($1) ORDER BY 1`,
    [names],
  );
  return r.rows.map((x) => x.name);
}

export async function migrateUp(o: MigrateOptions): Promise<UpResult> {
  const files = loadMigrations(o.dir);
  return withRunnerSession(o, async (session, waitedForLock) => {
    const { client } = session;
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
        throw new MigrationError(
          'no_history',
          `the database already holds ${found.join(', ')} but has no migration history: nothing was changed`,
          {
            hint: 'if this schema is the one the migrations build, adopt it with `pg-maintd migrate baseline`; otherwise point DATABASE_URL at another database',
            exitCode: EXIT.DATAERR,
          },
        );
      if (o.onlyIntoEmpty) await refuseNotEmpty(client);
    }
    await checkSchemaTrust(client, APP_SCHEMA);
    for (const schema of READ_SCHEMAS) await checkReadSchemaOwner(client, schema);

    await createHistory(client);
    // made just now, it may have come with privileges for others (ALTER DEFAULT PRIVILEGES)
    await readHistory(client);
    for (const f of pending) {
      if (o.signal?.aborted) throw o.signal.reason as Error;
      const t0 = performance.now();
      o.logger.info({ migration: f.file, transactional: f.transactional }, 'applying migration');
      const note = f.transactional
        ? await runInTransaction(session, f, o)
        : await runAlone(session, f, o, result);
      const durationMs = Math.round(performance.now() - t0);
      if (!f.transactional) await record(client, f, durationMs);
      result.applied.push({ file: f.file, durationMs, ...(note ? { note } : {}) });
      o.logger.info({ migration: f.file, durationMs, note }, 'migration applied');
    }
    return result;
  });
}

/** The start-up migrations build only in an empty database: anything else is the operator's to adopt. */
async function refuseNotEmpty(client: pg.PoolClient): Promise<void> {
  const found = await userObjects(client, LEASE_SCHEMA, HISTORY);
  if (found.count === 0) return;
  throw new MigrationError(
    'not_empty',
    `the database holds ${found.count} object(s) of its own (${found.examples.join(', ')}${found.count > found.examples.length ? ', …' : ''}) and no migration history: the start-up migrations leave it alone and build no application schema in it`,
    {
      hint: 'to build the sample application schema in it anyway, run `pg-maintd migrate up`; if it already holds that schema, mark it as migrated with `pg-maintd migrate baseline`; to leave it as it is, set MIGRATE_ON_START=false (backups, drills and metrics go on either way)',
      exitCode: EXIT.DATAERR,
    },
  );
}

async function record(client: pg.PoolClient, f: MigrationFile, durationMs: number, baselined = false) {
  await client.query(
    `INSERT INTO ${HISTORY_TABLE} (version, name, checksum, duration_ms, baselined) VALUES ($1, $2, $3, $4, $5)`,
    [f.version, f.name, f.checksum, durationMs, baselined],
  );
}

async function runInTransaction(
  session: RunnerSession,
  f: MigrationFile,
  o: MigrateOptions,
): Promise<undefined> {
  const { client } = session;
  const t0 = performance.now();
  await client.query('BEGIN');
  try {
    await client.query(`SET LOCAL lock_timeout = ${Math.round(o.lockTimeoutMs)}`);
    await client.query(`SELECT pg_catalog.set_config('search_path', '${APP_SCHEMA}', true)`);
    await watched(session, o, () => client.query(f.sql));
    await record(client, f, Math.round(performance.now() - t0));
    // a shutdown that came while the statement ran (and a cancel missed it) still rolls back
    if (o.signal?.aborted) throw o.signal.reason as Error;
    // a way in that opened while the file ran (a function planted by a session that kept a role
    // taken away since) undoes it, with whatever that code did as pg-maintd's role
    await client.query(`SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)`);
    await checkSchemaTrust(
      client,
      APP_SCHEMA,
      `Migration ${f.file} was rolled back: nothing of it was applied`,
    );
    await readHistory(client);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (o.signal?.aborted) throw interrupted(f, err);
    if (err instanceof MigrationError) throw err;
    throw failed(f, err, 'rolled back: nothing of it was applied or recorded');
  }
  return undefined;
}

/** A no-transaction migration: one statement; an invalid index from an earlier failed build is rebuilt. */
async function runAlone(
  session: RunnerSession,
  f: MigrationFile,
  o: MigrateOptions,
  result: UpResult,
): Promise<string | undefined> {
  const { client } = session;
  await client.query(`SET lock_timeout = ${Math.round(o.lockTimeoutMs)}`);
  try {
    const index = concurrentIndexName(f.sql);
    if (index) {
      const r = await client.query<{ valid: boolean; qualified: string; table: string; owner_ok: boolean }>(
        `SELECT i.indisvalid AS valid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS qualified,
                t.relname AS table, pg_catalog.pg_has_role(c.relowner, 'MEMBER') AS owner_ok
           FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
          WHERE c.relname = $1 AND n.nspname = coalesce($2, '${APP_SCHEMA}')`,
        [index.name, index.schema ?? null],
      );
      const found = r.rows[0];
      // an index of that name that another role made, or on another table, is not this migration's
      if (found && (!found.owner_ok || (index.table !== undefined && found.table !== index.table)))
        throw new MigrationError(
          'statement',
          `migration ${f.file} builds index ${index.name}, but ${found.qualified} exists already on table ${found.table}${found.owner_ok ? '' : ', made by another role'}: nothing was done`,
          {
            hint: `drop or rename that index (it is not this migration's), then run again`,
            exitCode: EXIT.DATAERR,
          },
        );
      if (found?.valid) return `index ${found.qualified} already exists and is valid: kept`;
      if (found) {
        o.logger.warn(
          { migration: f.file, index: found.qualified },
          'dropping the INVALID index a failed concurrent build left, to build it again',
        );
        await watched(session, o, () => client.query(`DROP INDEX CONCURRENTLY IF EXISTS ${found.qualified}`));
        result.repaired.push(found.qualified);
      }
    }
    try {
      await checkSchemaTrust(client, APP_SCHEMA);
      await client.query(`SELECT pg_catalog.set_config('search_path', '${APP_SCHEMA}', false)`);
      await watched(session, o, () => client.query(f.sql));
      await client.query(`SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)`);
      // outside a transaction nothing can be undone: the index is dropped, and the alarm raised
      await checkSchemaTrust(client, APP_SCHEMA, afterAlone(f, index?.name)).catch(async (err: unknown) => {
        if (index)
          await client
            .query(
              `DROP INDEX CONCURRENTLY IF EXISTS ${client.escapeIdentifier(index.schema ?? APP_SCHEMA)}.${client.escapeIdentifier(index.name)}`,
            )
            .catch(() => undefined);
        throw err;
      });
    } catch (err) {
      if (err instanceof MigrationError) throw err;
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
    await client
      .query(
        `SELECT pg_catalog.set_config('search_path', 'pg_catalog', false), pg_catalog.set_config('lock_timeout', '${Math.round(o.lockTimeoutMs)}', false)`,
      )
      .catch(() => undefined);
  }
}

/** What became of a no-transaction migration after which a way in was found. */
function afterAlone(f: MigrationFile, index: string | undefined): string {
  return `Migration ${f.file} ran outside a transaction meanwhile${index ? `: its index ${index} was dropped again` : ''}, and was not recorded; code of those roles may have run as pg-maintd's role during it: check what they were granted`;
}

/** A migration stopped by a shutdown: not a fault of the file, and nothing of it was recorded. */
function interrupted(f: MigrationFile, err: unknown): OperatorError {
  return new OperatorError(
    `migration ${f.file} was interrupted by the shutdown: ${f.transactional ? 'rolled back, nothing of it was applied or recorded' : 'not recorded; an INVALID index it left is rebuilt by the next run'}`,
    { hint: 'run it again', cause: err },
  );
}

/** The history table, made on first use: a role that may not create it is told so, with the way out. */
async function createHistory(client: pg.PoolClient): Promise<void> {
  try {
    await client.query(HISTORY_DDL);
  } catch (err) {
    const { kind } = classify(err);
    if (kind === 'permission_denied' || kind === 'read_only')
      throw new MigrationError(
        kind,
        `cannot create the migration history ${HISTORY_TABLE}: ${errorMessage(err)}`,
        {
          hint:
            kind === 'read_only'
              ? 'the database is read-only (a standby?): migrate the primary'
              : 'apply the migrations as the role that owns the schema (`pg-maintd migrate up` with its URL), or grant this role CREATE on it',
          exitCode: kind === 'read_only' ? EXIT.UNAVAILABLE : EXIT.DATAERR,
          cause: err,
        },
      );
    throw err;
  }
}

function failed(f: MigrationFile, err: unknown, what: string): MigrationError {
  const { code, kind, retryable } = classify(err);
  const e = err as { message?: string; position?: string; blockers?: SessionInfo[] };
  const line = e.position ? f.sql.slice(0, Number(e.position)).split('\n').length : undefined;
  const waitedFor = ['lock_timeout', 'deadlock', 'serialization_failure'].includes(kind);
  const blockers = e.blockers ?? [];
  const behind = waitedFor && blockers.length ? `, waiting behind ${sessionsText(blockers)}` : '';
  const reason: BlockedReason | FailedReason = waitedFor
    ? 'lock_wait'
    : kind === 'permission_denied'
      ? 'permission_denied'
      : kind === 'read_only'
        ? 'read_only'
        : retryable
          ? 'unreachable'
          : 'statement';
  const hint =
    kind === 'lock_timeout'
      ? 'another session held a lock (or, for CREATE INDEX CONCURRENTLY, an open transaction) for longer than MIGRATE_LOCK_TIMEOUT; end it or wait for it, then run again, or raise MIGRATE_LOCK_TIMEOUT'
      : waitedFor || retryable
        ? 'run again'
        : `fix ${f.file} (or the data it trips over) and run again`;
  return new MigrationError(
    reason,
    `migration ${f.file} failed${line ? ` at line ${line}` : ''}: ${e.message ?? String(err)}${code ? ` (SQLSTATE ${code})` : ''}${behind}; ${what}`,
    { hint, exitCode: EXIT.DATAERR, cause: err, sessions: blockers },
  );
}

export async function migrationStatus(o: MigrateOptions): Promise<StatusRow[]> {
  const files = loadMigrations(o.dir);
  return withReadSession(o, async (client) => statusRows(files, (await readHistory(client)) ?? []));
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
  return withRunnerSession(o, async ({ client }) => {
    const history = await readHistory(client);
    if (history?.length)
      throw new OperatorError(`the database already has a migration history (${history.length} applied)`, {
        hint: 'nothing was recorded: baseline is for a database without one; `pg-maintd migrate status` shows what is applied, `pg-maintd migrate up` applies the rest',
        exitCode: EXIT.DATAERR,
      });
    const wanted = [...new Set(files.flatMap((f) => createdTables(f.sql)))];
    const found = await existingTables(client, files);
    const missing = wanted.filter((t) => !found.includes(t));
    if (missing.length)
      throw new OperatorError(`cannot baseline: the database lacks ${missing.join(', ')}`, {
        hint: 'baseline marks a database that already holds the application schema as migrated; to build that schema here, run `pg-maintd migrate up`',
        exitCode: EXIT.DATAERR,
      });
    await client.query('BEGIN');
    try {
      await createHistory(client);
      for (const f of files) await record(client, f, 0, true);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    return files.map((f) => f.file);
  });
}
