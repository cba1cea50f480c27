// SIGTERM in the middle of work, through the real CLI: `restore`, `migrate up` (and the daemon's
// MIGRATE_ON_START), and restore drills (`verify` and the daemon's verify job). Each must exit
// promptly with the README's code and leave nothing half-done that looks good: no committed rows, no
// history row, no advisory lock, no client program, no scratch database, no drill result; and the
// next run must succeed. (SIGTERM mid-backup: test/e2e/backup-daemon.test.ts.)
import { writeFileSync, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { drillRecords } from '../support/backup.js';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/core/exit-codes.js';
import { LOCK_NAMESPACE } from '../../src/db/advisory-lock.js';
import { alive, childProcesses, slowRestoreSql, writeBackup } from '../support/crafted-backup.js';
import { spawnCli, waitFor, type SpawnedCli, cliEnv } from '../support/daemon.js';
import { createTestDatabase, useTestDatabase, type TestDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();
const dir = tempDir('pgmaintd-sigterm-');
let goodKey = '';

/** The CLI's env: the password in PGPASSWORD, never in the URL. */
function envFor(url: string, extra: Record<string, string> = {}): Record<string, string> {
  return cliEnv(url, dir, extra);
}

function noPassword(url: string): string {
  const u = new URL(url);
  u.password = '';
  return u.toString();
}

async function run(args: string[], env: Record<string, string>) {
  const cli = spawnCli(args, env);
  const { code } = await cli.exited;
  return { code, out: cli.output() };
}

/** Waits until a session of `pool`'s server runs a statement matching `like`. */
async function statementRunning(pool: pg.Pool, like: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    async () =>
      (
        await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()`,
          [like],
        )
      ).rows[0]!.n,
    (n) => n > 0,
    timeoutMs,
    100,
  );
}

/** SIGTERM, then the exit code, how long the exit took, and the client programs it had started. */
async function terminate(cli: SpawnedCli) {
  const children = childProcesses(cli.child.pid!);
  const t0 = Date.now();
  cli.child.kill('SIGTERM');
  const { code } = await cli.exited;
  return { code, ms: Date.now() - t0, children };
}

async function sessionsNamed(pool: pg.Pool, like: string): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1`,
    [like],
  );
  return r.rows[0]!.n;
}

/** SIGTERM mid-restore: exit 143 at once, the client program and its session gone, `table` not there. */
async function expectRestoreInterrupted(cli: SpawnedCli, tool: string, target: pg.Pool, table: string) {
  const { code, ms, children } = await terminate(cli);
  expect(code, cli.output()).toBe(EXIT.FORCED_SIGTERM);
  expect(ms).toBeLessThan(5000);
  expect(children.map((c) => c.comm)).toContain(tool);
  expect(cli.output()).toMatch(
    /pg-maintd: pg-maintd restore interrupted by SIGTERM: the work in flight was rolled back and nothing was recorded\n {2}fix: run the command again/,
  );
  expect(cli.output()).not.toMatch(/\n\s+at /);
  for (const c of children) expect(alive(c.pid), `${c.comm} (${c.pid}) still running`).toBe(false);
  // the backend is ended too, not left running its statement until it notices
  await waitFor(
    () => sessionsNamed(target, 'pg-maintd-restore-%'),
    (n) => n === 0,
    5000,
  );
  const t = await target.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [table]);
  expect(t.rows[0]!.t).toBeNull(); // one transaction: nothing of it stayed
}

async function scratchDatabases(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ datname: string }>(
    `SELECT datname FROM pg_database WHERE datname LIKE 'pgmaintd\\_verify\\_%' ORDER BY 1`,
  );
  return r.rows.map((x) => x.datname);
}

beforeAll(async () => {
  await seed(db.pool, 20, 2);
  const r = await run(['backup'], envFor(db.url));
  expect(r.code, r.out).toBe(0);
  goodKey = new RegExp(`(${db.name}/${db.name}_\\d{8}_\\d{6}-[0-9a-f]{8}\\.sql\\.gz)`).exec(r.out)![1]!;
});

describe('SIGTERM during `restore`', () => {
  let target: TestDatabase & { drop: () => Promise<void> };
  beforeAll(async () => {
    target = await createTestDatabase('t_sigterm_restore');
  });
  afterAll(async () => {
    await target?.drop();
  });

  it('exits 143 at once; the target is left empty, no psql or session remains; the next restore succeeds', async () => {
    const slow = writeBackup(dir, db.name, slowRestoreSql('half_restored', 60), {
      at: new Date(Date.UTC(2001, 0, 1)),
    });
    const cli = spawnCli(
      ['restore', '--key', slow.key, '--target-url', noPassword(target.url)],
      envFor(db.url),
    );
    await statementRunning(target.pool, 'SELECT pg_sleep(60)%');
    await expectRestoreInterrupted(cli, 'psql', target.pool, 'half_restored');

    const again = await run(
      ['restore', '--key', goodKey, '--target-url', noPassword(target.url)],
      envFor(db.url),
    );
    expect(again.code, again.out).toBe(0);
    const n = await target.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    expect(n.rows[0]!.n).toBe(20);
  });
});

describe('SIGTERM during a custom-format `restore` (pg_restore)', () => {
  let source: TestDatabase & { drop: () => Promise<void> };
  let target: TestDatabase & { drop: () => Promise<void> };
  let key = '';
  beforeAll(async () => {
    [source, target] = await Promise.all([
      createTestDatabase('t_sigterm_csrc'),
      createTestDatabase('t_sigterm_ctgt'),
    ]);
    // a CHECK that sleeps only where pgmaintd_test.sleep is set: in the target, so its COPY crawls
    await source.pool.query(`
      CREATE FUNCTION slow_ok(i int) RETURNS boolean LANGUAGE sql AS
        $$ SELECT pg_sleep(coalesce(nullif(current_setting('pgmaintd_test.sleep', true), '')::float8, 0)) IS NOT NULL $$;
      CREATE TABLE slow_rows (id int CHECK (slow_ok(id)));
      INSERT INTO slow_rows SELECT generate_series(1, 50);`);
    await target.pool.query(`ALTER DATABASE ${target.name} SET pgmaintd_test.sleep = '1'`);
    const r = await run(['backup'], envFor(source.url, { BACKUP_FORMAT: 'custom' }));
    expect(r.code, r.out).toBe(0);
    key = new RegExp(`(${source.name}/${source.name}_\\d{8}_\\d{6}-[0-9a-f]{8}\\.dump\\.gz)`).exec(
      r.out,
    )![1]!;
  });
  afterAll(async () => {
    await Promise.all([source?.drop(), target?.drop()]);
  });

  it('exits 143 at once; the target is left empty, no pg_restore or session remains', async () => {
    const cli = spawnCli(
      ['restore', '--key', key, '--target-url', noPassword(target.url)],
      envFor(source.url),
    );
    await statementRunning(target.pool, 'COPY %slow_rows%');
    await expectRestoreInterrupted(cli, 'pg_restore', target.pool, 'slow_rows');
  });
});

describe('SIGTERM during a migration', () => {
  const migrations = tempDir('pgmaintd-slow-migrations-');
  writeFileSync(
    join(migrations, '0001_slow.sql'),
    "CREATE TABLE slow_marker (id integer);\nSELECT pg_sleep(current_setting('pgmaintd_test.sleep')::float8);\n",
  );
  let mdb: TestDatabase & { drop: () => Promise<void> };
  beforeAll(async () => {
    mdb = await createTestDatabase('t_sigterm_migrate');
  });
  afterAll(async () => {
    await mdb?.drop();
  });

  const sleepFor = async (seconds: number) => {
    await mdb.pool.query(`ALTER DATABASE ${mdb.name} SET pgmaintd_test.sleep = '${seconds}'`);
  };

  async function assertRolledBack() {
    const marker = await mdb.pool.query<{ t: string | null }>(`SELECT to_regclass('slow_marker')::text AS t`);
    expect(marker.rows[0]!.t).toBeNull();
    const h = await mdb.pool.query<{ n: number }>(
      `SELECT CASE WHEN to_regclass('pgmaintd_migrations') IS NULL THEN 0
              ELSE (SELECT count(*)::int FROM pgmaintd_migrations) END AS n`,
    );
    expect(h.rows[0]!.n).toBe(0);
    await waitFor(
      async () =>
        (
          await mdb.pool.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND d.datname = current_database()`,
            [LOCK_NAMESPACE],
          )
        ).rows[0]!.n,
      (n) => n === 0,
      5000,
    );
    // no session is left sleeping in the migration
    const busy = await mdb.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'CREATE TABLE slow_marker%' AND state = 'active'`,
    );
    expect(busy.rows[0]!.n).toBe(0);
  }

  it('`migrate up`: exits 143 at once; rolled back, not recorded, lock released; a re-run applies it', async () => {
    await sleepFor(60);
    const env = envFor(mdb.url, { MIGRATIONS_DIR: migrations });
    const cli = spawnCli(['migrate', 'up'], env);
    await statementRunning(mdb.pool, 'CREATE TABLE slow_marker%');
    const { code, ms } = await terminate(cli);
    expect(code, cli.output()).toBe(EXIT.FORCED_SIGTERM);
    expect(ms).toBeLessThan(5000);
    expect(cli.output()).toContain(
      'pg-maintd: pg-maintd migrate interrupted by SIGTERM: the work in flight was rolled back and nothing was recorded',
    );
    expect(cli.output()).not.toMatch(/\n\s+at /);
    await assertRolledBack();

    await sleepFor(0);
    const again = await run(['migrate', 'up'], env);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toMatch(/^applied 0001_slow\.sql in \d+ ms$/m);
    const h = await mdb.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pgmaintd_migrations');
    expect(h.rows[0]!.n).toBe(1);
  });

  it('the daemon (MIGRATE_ON_START): drains at once with exit 0, the migration rolled back; the next start applies it', async () => {
    await mdb.pool.query('DROP TABLE IF EXISTS slow_marker, pgmaintd_migrations');
    await sleepFor(60);
    const env = envFor(mdb.url, {
      MIGRATIONS_DIR: migrations,
      MIGRATE_ON_START: 'true',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
    });
    const cli = spawnCli(['run'], env);
    await statementRunning(mdb.pool, 'CREATE TABLE slow_marker%');
    const { code, ms } = await terminate(cli);
    expect(code, cli.output()).toBe(EXIT.OK);
    expect(ms).toBeLessThan(5000); // not the 25 s grace period
    expect(
      cli.lines().some((l) => l.msg.startsWith('start-up migrations stopped by the shutdown')),
      cli.output(),
    ).toBe(true);
    expect(cli.lines().some((l) => l.msg === 'migrations applied')).toBe(false);
    await assertRolledBack();

    await sleepFor(0);
    const next = spawnCli(['run'], env);
    await next.waitForLog((l) => l.msg === 'migrations applied', 30_000);
    next.child.kill('SIGTERM');
    expect((await next.exited).code).toBe(EXIT.OK);
  });
});

describe('SIGTERM during a restore drill', () => {
  it('`verify`: exits 143 at once; the scratch database is dropped, no psql left, nothing recorded; the next drill passes', async () => {
    const slow = writeBackup(dir, db.name, slowRestoreSql('drill_marker', 60), {
      at: new Date(Date.UTC(2002, 0, 1)),
    });
    const before = await scratchDatabases(db.pool);
    const cli = spawnCli(['verify', '--key', slow.key], envFor(db.url));
    await statementRunning(db.pool, 'SELECT pg_sleep(60)%');
    expect((await scratchDatabases(db.pool)).length).toBe(before.length + 1);
    const { code, ms, children } = await terminate(cli);
    expect(code, cli.output()).toBe(EXIT.FORCED_SIGTERM);
    expect(ms).toBeLessThan(5000);
    expect(cli.output()).toContain(
      'pg-maintd: pg-maintd verify interrupted by SIGTERM: the work in flight was rolled back and nothing was recorded',
    );
    expect(cli.output()).not.toMatch(/\n\s+at /);
    for (const c of children) expect(alive(c.pid), `${c.comm} (${c.pid}) still running`).toBe(false);
    expect(await scratchDatabases(db.pool)).toEqual(before);
    expect(drillRecords(dirname(slow.path), basename(slow.path))).toEqual([]); // a shutdown is no verdict

    const again = await run(['verify', '--key', goodKey], envFor(db.url));
    expect(again.code, again.out).toBe(0);
    expect(again.out).toMatch(/^ok: .*: 3 tables compared$/m);
  });

  it('a scratch database a killed drill left behind is dropped by the next drill; a running drill keeps its own', async () => {
    const leftover = 'pgmaintd_verify_deadbeef00';
    const live = 'pgmaintd_verify_0123456789';
    await db.pool.query(`CREATE DATABASE ${leftover}`);
    await db.pool.query(`CREATE DATABASE ${live}`);
    // a drill "running" elsewhere holds the lock named after its scratch database
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, live]);
      const r = spawnCli(['verify', '--key', goodKey], envFor(db.url));
      expect((await r.exited).code, r.output()).toBe(0);
      expect(
        r
          .lines()
          .some(
            (l) =>
              l.msg === 'dropped the scratch database an earlier drill left behind' && l.scratch === leftover,
          ),
      ).toBe(true);
      expect(await scratchDatabases(db.pool)).toEqual([live]);
    } finally {
      await holder.end();
      await db.pool.query(`DROP DATABASE IF EXISTS ${live}`);
      await db.pool.query(`DROP DATABASE IF EXISTS ${leftover}`);
    }
  });

  it("the daemon's verify job: drains with exit 0, the scratch database dropped, nothing recorded", async () => {
    const own = tempDir('pgmaintd-sigterm-drill-');
    mkdirSync(join(own, db.name), { recursive: true });
    const slow = writeBackup(own, db.name, slowRestoreSql('job_marker', 60));
    const before = await scratchDatabases(db.pool);
    const cli = spawnCli(
      ['run'],
      envFor(db.url, {
        BACKUP_DIR: own,
        BACKUP_VERIFY_SCHEDULE: '* * * * * *',
        SHUTDOWN_GRACE_PERIOD: '15s',
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: '0',
      }),
    );
    await cli.waitForLog((l) => l.msg === 'restore drill started', 20_000);
    await statementRunning(db.pool, 'SELECT pg_sleep(60)%');
    const { code, ms } = await terminate(cli);
    expect(code, cli.output()).toBe(EXIT.OK);
    expect(ms).toBeLessThan(10_000);
    expect(await scratchDatabases(db.pool)).toEqual(before);
    expect(drillRecords(dirname(slow.path), basename(slow.path))).toEqual([]);
    expect(cli.lines().some((l) => l.msg === 'restore drill FAILED')).toBe(false);
    await waitFor(
      () => sessionsNamed(db.pool, 'pg-maintd-restore-%'),
      (n) => n === 0,
      5000,
    );
  });
});
