// The migration runner naming who it waits for, and the start-up bootstrap (MIGRATE_ON_START) as a
// background service: blocked runs retried, failed ones reported and retried once the history
// changes, and the metrics that say which. Against a real server; other sessions are real sessions.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';
import { LOCK_NAMESPACE } from '../../src/db/advisory-lock.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { createLogger } from '../../src/log/logger.js';
import { MigrationBootstrap } from '../../src/migrate/bootstrap.js';
import { userObjects } from '../../src/migrate/empty-database.js';
import { MigrationMetrics } from '../../src/migrate/metrics.js';
import { MigrationError } from '../../src/migrate/migration-error.js';
import {
  baselineMigrations,
  migrateUp,
  migrationStatus,
  type MigrateOptions,
} from '../../src/migrate/runner.js';
import { metricValue } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { createTestDatabase } from '../support/postgres.js';
import { SEED_SCHEMA } from '../support/seed.js';
import { tempDir } from '../support/temp.js';

const logger = createLogger({ level: 'silent', format: 'json' });
const SHIPPED = join(PACKAGE_ROOT, 'migrations');

function options(url: string, dir = SHIPPED, extra: Partial<MigrateOptions> = {}): MigrateOptions {
  return {
    db: {
      url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
    },
    dir,
    logger,
    lockWaitMs: 60_000,
    lockTimeoutMs: 10_000,
    ...extra,
  };
}

function tempMigrations(files: Record<string, string>): string {
  const dir = tempDir('migr-boot-');
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, name), sql);
  return dir;
}

/** Another session, named, with its backend pid. */
async function session(url: string, applicationName: string) {
  const c = new pg.Client({ connectionString: url, application_name: applicationName });
  await c.connect();
  const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return { c, pid };
}

async function rejection(p: Promise<unknown>): Promise<MigrationError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MigrationError);
  return err as MigrationError;
}

const gauge = (registry: Registry, name: string, labels: Record<string, string> = {}) =>
  metricValue(registry, name, labels);

describe('the runner names who it waits for', () => {
  it('gives up after MIGRATE_LOCK_WAIT when another session holds the lock, naming it (exit 69)', async () => {
    const db = await createTestDatabase('t_migboot');
    const holder = await session(db.url, 'holding-the-lock');
    try {
      await holder.c.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, 'migrate']);
      const err = await rejection(migrateUp(options(db.url, SHIPPED, { lockWaitMs: 1000 })));
      expect(err.reason).toBe('lock_held');
      expect(err.exitCode).toBe(EXIT.UNAVAILABLE);
      expect(err.message).toMatch(
        new RegExp(
          `held the migration lock for over 1000 ms: pid ${holder.pid} \\(role postgres, application_name "holding-the-lock", client 127\\.0\\.0\\.1\\)$`,
        ),
      );
      expect(err.hint).toMatch(/pg_terminate_backend/);
      expect(err.sessions.map((s) => s.pid)).toEqual([holder.pid]);
    } finally {
      await holder.c.end();
      await db.drop();
    }
  });

  it('a CREATE INDEX CONCURRENTLY that gives up at MIGRATE_LOCK_TIMEOUT names the open transaction it waited for', async () => {
    const db = await createTestDatabase('t_migboot');
    const dir = tempMigrations({
      '0001_t.sql': 'CREATE TABLE t (id int);',
      '0002_t_id.sql': '-- pg-maintd: no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n',
    });
    const report = await session(db.url, 'long-report');
    try {
      await report.c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await report.c.query('SELECT 1');
      const waits: string[] = [];
      const err = await rejection(
        migrateUp(
          options(db.url, dir, {
            lockTimeoutMs: 3000,
            onWait: (w) => waits.push(w ? `${w.reason}:${w.sessions.map((s) => s.pid).join()}` : 'over'),
          }),
        ),
      );
      expect(err.reason).toBe('lock_wait');
      expect(err.message).toMatch(
        new RegExp(
          `0002_t_id\\.sql failed: canceling statement due to lock timeout \\(SQLSTATE 55P03\\), waiting behind pid ${report.pid} \\(role postgres, application_name "long-report", client 127\\.0\\.0\\.1, transaction open \\d+ s\\)`,
        ),
      );
      expect(err.sessions.map((s) => s.pid)).toContain(report.pid);
      // a wait that went on was reported while it lasted (past 2 s), and not as over: it failed
      expect(waits).toContain(`lock_wait:${report.pid}`);
      expect(waits).not.toContain('over');
    } finally {
      await report.c.end();
      await db.drop();
    }
  });
});

describe('the start-up bootstrap', () => {
  const fast = { firstRetryMs: 100, maxRetryMs: 400, recheckMs: 200, warnEveryMs: 60_000 };

  it('waits for a held lock with the metric up, then migrates; start() returns at once', async () => {
    const db = await createTestDatabase('t_migboot');
    const holder = await session(db.url, 'holding-the-lock');
    const registry = new Registry();
    const dir = tempMigrations({ '0001_t.sql': 'CREATE TABLE t (id int);' });
    const boot = new MigrationBootstrap(options(db.url, dir), logger, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await holder.c.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, 'migrate']);
      await boot.start(); // does not wait for the lock
      await waitFor(
        () => gauge(registry, 'pgmaintd_migrations_blocked', { reason: 'lock_held' }),
        (v) => v === 1,
        10_000,
        50,
      );
      expect(await gauge(registry, 'pgmaintd_migrations_pending')).toBe(1);
      await holder.c.query('SELECT pg_advisory_unlock_all()');
      await boot.settled;
      expect(await gauge(registry, 'pgmaintd_migrations_blocked', { reason: 'lock_held' })).toBe(0);
      expect(await gauge(registry, 'pgmaintd_migrations_pending')).toBe(0);
    } finally {
      await boot.stop();
      await holder.c.end();
      await db.drop();
    }
  });

  it('a failure retrying cannot fix (tables without history) is reported, not retried, until the history changes; then it runs', async () => {
    const db = await createTestDatabase('t_migboot');
    const registry = new Registry();
    const runs: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean))
          runs.push((JSON.parse(l) as { msg: string }).msg);
        done();
      },
    });
    const captured = createLogger({ level: 'debug', format: 'json', destination });
    const boot = new MigrationBootstrap(options(db.url), captured, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await db.pool.query(SEED_SCHEMA);
      await boot.start();
      await waitFor(
        () => gauge(registry, 'pgmaintd_migrations_failed', { reason: 'no_history' }),
        (v) => v === 1,
        10_000,
        50,
      );
      expect(await gauge(registry, 'pgmaintd_migrations_pending')).toBe(7);
      // several re-reads pass without a change: no retry (one error line, not one per re-read)
      const unchanged = 'migration history unchanged since the failure: not retried';
      await waitFor(
        async () => runs.filter((m) => m === unchanged).length,
        (n) => n >= 3,
        10_000,
        50,
      );
      expect(runs.filter((m) => m.startsWith('start-up migrations stopped'))).toHaveLength(1);
      await baselineMigrations(options(db.url));
      await boot.settled;
      expect(runs).toContain('schema is up to date');
      expect(runs.filter((m) => m.startsWith('start-up migrations stopped'))).toHaveLength(1);
      expect(await gauge(registry, 'pgmaintd_migrations_failed', { reason: 'no_history' })).toBe(0);
      expect(await gauge(registry, 'pgmaintd_migrations_pending')).toBe(0);
    } finally {
      await boot.stop();
      await db.drop();
    }
  });

  it('stop() during a wait returns at once', async () => {
    const db = await createTestDatabase('t_migboot');
    const holder = await session(db.url, 'holding-the-lock');
    const registry = new Registry();
    const boot = new MigrationBootstrap(options(db.url), logger, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await holder.c.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, 'migrate']);
      await boot.start();
      await waitFor(
        () => gauge(registry, 'pgmaintd_migrations_blocked', { reason: 'lock_held' }),
        (v) => v === 1,
        10_000,
        50,
      );
      const t0 = performance.now();
      await boot.stop();
      expect(performance.now() - t0).toBeLessThan(2000);
    } finally {
      await holder.c.end();
      await db.drop();
    }
  });
});

describe('the start-up migrations build only in an empty database, or one under their history', () => {
  const fast = { firstRetryMs: 100, maxRetryMs: 400, recheckMs: 200, warnEveryMs: 60_000 };

  /** A logger whose lines are kept, parsed. */
  function capture() {
    const lines: Array<{ level: number; msg: string; reason?: string; hint?: string }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean))
          lines.push(JSON.parse(l) as (typeof lines)[number]);
        done();
      },
    });
    return { lines, logger: createLogger({ level: 'debug', format: 'json', destination }) };
  }

  const appTables = async (pool: pg.Pool) =>
    (
      await pool.query<{ t: string | null }>(
        `SELECT unnest(ARRAY[to_regclass('public.users'), to_regclass('public.projects'), to_regclass('public.tasks')])::text AS t`,
      )
    ).rows.map((r) => r.t);

  it('a database with a foreign table and no history is left alone: warned once with the ways to adopt it, skipped metric 1', async () => {
    const db = await createTestDatabase('t_migboot');
    const registry = new Registry();
    const { lines, logger: captured } = capture();
    const boot = new MigrationBootstrap(options(db.url), captured, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await db.pool.query(`CREATE EXTENSION file_fdw`);
      await db.pool.query(`CREATE SERVER files FOREIGN DATA WRAPPER file_fdw`);
      await db.pool.query(
        `CREATE FOREIGN TABLE passwd (line text) SERVER files OPTIONS (filename '/etc/hostname')`,
      );
      await boot.start();
      await waitFor(
        () => gauge(registry, 'pgmaintd_migrations_skipped', { reason: 'not_empty' }),
        (v) => v === 1,
        10_000,
        50,
      );
      // the history is re-read a few times without a change: still one warning, nothing retried
      await waitFor(
        async () => lines.filter((l) => l.msg.startsWith('migration history unchanged')).length,
        (n) => n >= 3,
        10_000,
        50,
      );
      const warned = lines.filter((l) => l.msg.startsWith('start-up migrations skipped'));
      expect(warned).toHaveLength(1);
      expect(warned[0]!.level).toBe(40);
      expect(warned[0]!.reason).toBe('not_empty');
      expect(warned[0]!.msg).toContain('foreign table public.passwd');
      expect(warned[0]!.msg).toContain('no migration history');
      // the extension's own functions do not count as the database's objects
      expect(warned[0]!.msg).not.toContain('file_fdw_handler');
      expect(warned[0]!.hint).toMatch(
        /`pg-maintd migrate up`.*`pg-maintd migrate baseline`.*MIGRATE_ON_START=false/,
      );
      expect(lines.some((l) => l.level >= 50)).toBe(false);
      expect(await gauge(registry, 'pgmaintd_migrations_failed', { reason: 'no_history' })).toBe(0);
      expect(await gauge(registry, 'pgmaintd_migrations_pending')).toBe(7);
      expect(await appTables(db.pool)).toEqual([null, null, null]);
      const h = await db.pool.query<{ h: string | null }>(
        "SELECT to_regclass('pgmaintd_migrations')::text AS h",
      );
      expect(h.rows[0]!.h).toBeNull();
      // `migrate up` by hand is the adoption: the bootstrap sees the history change and is done
      await migrateUp(options(db.url));
      await boot.settled;
      expect(await gauge(registry, 'pgmaintd_migrations_skipped', { reason: 'not_empty' })).toBe(0);
      expect(await appTables(db.pool)).toEqual(['users', 'projects', 'tasks']);
    } finally {
      await boot.stop();
      await db.drop();
    }
  });

  it("an empty database (an extension, pg-maintd's own schema and a leftover empty history do not count) is migrated", async () => {
    const db = await createTestDatabase('t_migboot');
    const registry = new Registry();
    const boot = new MigrationBootstrap(options(db.url), logger, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await db.pool.query(`CREATE EXTENSION pg_trgm`);
      await db.pool.query(`CREATE SCHEMA pgmaintd; CREATE TABLE pgmaintd.leases (name text PRIMARY KEY)`);
      await db.pool.query(
        `CREATE TABLE public.pgmaintd_migrations (version integer PRIMARY KEY, name text NOT NULL,
           checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
           duration_ms integer NOT NULL, baselined boolean NOT NULL DEFAULT false)`,
      );
      await boot.start();
      await boot.settled;
      expect(await appTables(db.pool)).toEqual(['users', 'projects', 'tasks']);
      expect(await gauge(registry, 'pgmaintd_migrations_skipped', { reason: 'not_empty' })).toBe(0);
      expect(await gauge(registry, 'pgmaintd_migrations_pending')).toBe(0);
    } finally {
      await boot.stop();
      await db.drop();
    }
  });

  it("a Supabase project's platform schemas (owned by its superuser supabase_admin) do not count; the RLS uses auth.uid()", async () => {
    const db = await createTestDatabase('t_migboot');
    const registry = new Registry();
    const boot = new MigrationBootstrap(options(db.url), logger, new MigrationMetrics(registry), {
      timing: fast,
    });
    // roles are the cluster's: made if missing, and left for the next run (it owns nothing after)
    await db.pool.query(`DO $$ BEGIN CREATE ROLE supabase_admin SUPERUSER NOLOGIN;
                         EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await db.pool.query(`DO $$ BEGIN CREATE ROLE pgbouncer NOLOGIN;
                         EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    try {
      await db.pool.query(`
        CREATE SCHEMA auth AUTHORIZATION supabase_admin;
        CREATE TABLE auth.users (id uuid PRIMARY KEY, email text);
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
          AS $f$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
        CREATE SCHEMA storage AUTHORIZATION supabase_admin;
        CREATE TABLE storage.objects (id uuid PRIMARY KEY, name text);
        ALTER TABLE auth.users OWNER TO supabase_admin;
        ALTER FUNCTION auth.uid() OWNER TO supabase_admin;
        ALTER TABLE storage.objects OWNER TO supabase_admin;
        -- the platform's functions in schemas that are not its own: extensions (owned by postgres
        -- in some projects) and pgbouncer (owned by the role pgbouncer)
        CREATE SCHEMA extensions;
        CREATE FUNCTION extensions.grant_pg_cron_access() RETURNS void LANGUAGE sql AS 'SELECT';
        ALTER FUNCTION extensions.grant_pg_cron_access() OWNER TO supabase_admin;
        CREATE SCHEMA pgbouncer AUTHORIZATION pgbouncer;
        CREATE FUNCTION pgbouncer.get_auth(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
        ALTER FUNCTION pgbouncer.get_auth(text) OWNER TO supabase_admin;`);
      await boot.start();
      await boot.settled;
      expect(await appTables(db.pool)).toEqual(['users', 'projects', 'tasks']);
      expect(await gauge(registry, 'pgmaintd_migrations_skipped', { reason: 'not_empty' })).toBe(0);
      const policies = await db.pool.query<{ qual: string }>(
        `SELECT pg_catalog.pg_get_expr(polqual, polrelid) AS qual FROM pg_catalog.pg_policy
          WHERE polrelid = 'public.projects'::regclass`,
      );
      expect(policies.rows.map((r) => r.qual).join(' ')).toContain('auth.uid()');
    } finally {
      await boot.stop();
      await db.drop();
    }
  });

  it('the same schemas owned by anyone else are data: left alone', async () => {
    const db = await createTestDatabase('t_migboot');
    const registry = new Registry();
    const boot = new MigrationBootstrap(options(db.url), logger, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await db.pool.query(`CREATE SCHEMA storage; CREATE TABLE storage.objects (id uuid PRIMARY KEY)`);
      await boot.start();
      await waitFor(
        () => gauge(registry, 'pgmaintd_migrations_skipped', { reason: 'not_empty' }),
        (v) => v === 1,
        10_000,
        50,
      );
      expect(await appTables(db.pool)).toEqual([null, null, null]);
    } finally {
      await boot.stop();
      await db.drop();
    }
  });

  it('what is not empty: a large object, an operator, a collation, a schema named pg… under standard_conforming_strings=off', async () => {
    const db = await createTestDatabase('t_migboot');
    const client = await db.pool.connect();
    const history = { schema: 'public', table: 'pgmaintd_migrations' };
    try {
      expect((await userObjects(client, 'pgmaintd', history)).count).toBe(0);
      const cases = [
        [`SELECT lo_from_bytea(0, 'secret'::bytea)`, 'large object'],
        [
          `CREATE OPERATOR public.=== (FUNCTION = int4eq, LEFTARG = int, RIGHTARG = int)`,
          'operator public."==="',
        ],
        [`CREATE COLLATION public.mine (provider = icu, locale = 'und')`, 'collation public.mine'],
      ] as const;
      for (const [sql, seen] of cases) {
        await client.query('BEGIN');
        await client.query(sql);
        const found = await userObjects(client, 'pgmaintd', history);
        await client.query('ROLLBACK');
        expect(found.count, sql).toBeGreaterThan(0);
        expect(found.examples.join(' '), sql).toContain(seen);
      }
      // the session's own setting, as a role or database default could set it: `_` stays literal
      await client.query(`SET standard_conforming_strings = off`);
      await client.query(`CREATE SCHEMA pg1data; CREATE TABLE pg1data.orders (id int)`);
      expect((await userObjects(client, 'pgmaintd', history)).examples).toEqual(['table pg1data.orders']);
    } finally {
      client.release();
      await db.drop();
    }
  });

  it('a database under the history is migrated forward, whatever else it holds', async () => {
    const db = await createTestDatabase('t_migboot');
    const first = { '0001_t.sql': 'CREATE TABLE t (id int);' };
    const dir = tempMigrations(first);
    const registry = new Registry();
    const boot = new MigrationBootstrap(options(db.url, dir), logger, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await migrateUp(options(db.url, dir));
      await db.pool.query(
        `CREATE TABLE someone_elses (id int); CREATE FUNCTION theirs() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
      );
      writeFileSync(join(dir, '0002_t_note.sql'), 'ALTER TABLE t ADD COLUMN note text;');
      await boot.start();
      await boot.settled;
      const rows = await migrationStatus(options(db.url, dir));
      expect(rows.map((r) => r.state)).toEqual(['applied', 'applied']);
      expect(await gauge(registry, 'pgmaintd_migrations_skipped', { reason: 'not_empty' })).toBe(0);
    } finally {
      await boot.stop();
      await db.drop();
    }
  });

  it('`migrate baseline` records every migration with its checksum, runs none; then the bootstrap applies nothing', async () => {
    const db = await createTestDatabase('t_migboot');
    const registry = new Registry();
    const { lines, logger: captured } = capture();
    const boot = new MigrationBootstrap(options(db.url), captured, new MigrationMetrics(registry), {
      timing: fast,
    });
    try {
      await db.pool.query(SEED_SCHEMA);
      const files = await baselineMigrations(options(db.url));
      expect(files).toHaveLength(7);
      const rows = await migrationStatus(options(db.url));
      expect(rows.map((r) => [r.state, r.baselined])).toEqual(Array(7).fill(['applied', true]));
      // not run: 0007's row-level security is not there
      const rls = await db.pool.query<{ rls: boolean }>(
        "SELECT relrowsecurity AS rls FROM pg_class WHERE oid = 'tasks'::regclass",
      );
      expect(rls.rows[0]!.rls).toBe(false);
      await expect(baselineMigrations(options(db.url))).rejects.toThrow(
        /already has a migration history \(7 applied\)/,
      );
      await boot.start();
      await boot.settled;
      expect(lines.map((l) => l.msg)).toContain('schema is up to date');
      expect(lines.some((l) => l.msg === 'applying migration')).toBe(false);
    } finally {
      await boot.stop();
      await db.drop();
    }
  });
});
