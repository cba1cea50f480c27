// Start-up migrations (MIGRATE_ON_START) that cannot go on because of another session, through a
// real `pg-maintd run`: another role holding the migration's advisory lock, and a long open
// transaction that a pending CREATE INDEX CONCURRENTLY must wait for. Either way the daemon stays
// up (/healthz 200 throughout, /metrics served), takes its scheduled backups, names the session in
// the way (pid, role, application_name, client address) at warn, no more than once a minute,
// exposes pgmaintd_migrations_blocked{reason}, and migrates once the session lets go.
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCK_NAMESPACE } from '../../src/db/advisory-lock.js';
import { EXIT } from '../../src/core/exit-codes.js';
import {
  cliEnv,
  sample,
  scrapeMetrics,
  spawnCli,
  startDaemon,
  waitFor,
  watchHealth,
  type LogLine,
} from '../support/daemon.js';
import { adminUrl, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

type Daemon = Awaited<ReturnType<typeof startDaemon>>;

const suffix = Math.random().toString(16).slice(2, 8);
const ATTACKER = `blocker_${suffix}`;
const PASSWORD = `pw-${suffix}-blk`;

beforeAll(async () => {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  await c.query(`CREATE ROLE ${ATTACKER} LOGIN PASSWORD '${PASSWORD}'`);
  await c.end();
});
afterAll(async () => {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  await c.query(`DROP ROLE IF EXISTS ${ATTACKER}`).catch(() => undefined);
  await c.end();
});

/**
 * One statement on its own connection, closed before the test moves on: a pooled connection still
 * closing when the database is dropped WITH (FORCE) would be told so, with nobody listening.
 */
async function once<R extends pg.QueryResultRow>(url: string, sql: string): Promise<pg.QueryResult<R>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query<R>(sql);
  } finally {
    await c.end();
  }
}

/** A session of the other role in `db`, over TCP (so it has a client address). */
async function otherSession(db: TestDatabase, applicationName: string) {
  const u = new URL(db.url);
  u.username = ATTACKER;
  u.password = PASSWORD;
  const c = new pg.Client({ connectionString: u.toString(), application_name: applicationName });
  c.on('error', () => undefined);
  await c.connect();
  const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return { c, pid };
}

const metrics = scrapeMetrics;

interface Row {
  reason: 'lock_held' | 'lock_wait';
  /** The other session gets in the way; returns its pid and how to let go. */
  block(db: TestDatabase): Promise<{ pid: number; release(): Promise<void> }>;
  migrations: string;
  env?: Record<string, string>;
  /** Databases backed up on schedule (default: the migrated one). */
  backupDatabases?(db: TestDatabase, other: TestDatabase): string;
  /** Checked once migrated. */
  after?(db: TestDatabase): Promise<void>;
  /** Before the daemon starts (the migrations already applied, say). */
  arrange?(db: TestDatabase): Promise<void>;
}

/** One row: the daemon stays up and does its other work, names the session, and migrates once it lets go. */
async function runRow(row: Row) {
  const db = await createTestDatabase('t_migblk');
  const other = await createTestDatabase('t_migblk_other');
  await once(other.url, 'CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)');
  const dir = tempDir('pgmaintd-migblk-');
  let d: Daemon | undefined;
  let health: (() => Promise<number[]>) | undefined;
  let blocker: Awaited<ReturnType<Row['block']>> | undefined;
  try {
    await row.arrange?.(db);
    blocker = await row.block(db);
    d = await startDaemon(
      cliEnv(db.url, dir, {
        MIGRATE_ON_START: 'true',
        MIGRATIONS_DIR: row.migrations,
        BACKUP_SCHEDULE: '*/2 * * * * *',
        BACKUP_DATABASES: row.backupDatabases?.(db, other) ?? db.name,
        METRICS_INTERVAL: '1s',
        ...row.env,
      }),
    );
    health = watchHealth(d);
    const daemon = d;

    // 1. the session in the way is named at warn, with what an operator needs to find it
    const warn = await daemon.waitForLog((l) => l.reason === row.reason && l.level === 40, 30_000);
    const sessions = warn.sessions as Array<Record<string, unknown>>;
    expect(sessions.find((s) => s.pid === blocker!.pid)).toMatchObject({
      pid: blocker.pid,
      role: ATTACKER,
      applicationName: `hostile-${row.reason}`,
      clientAddr: '127.0.0.1',
    });
    expect(warn.msg).toContain(
      `pid ${blocker.pid} (role ${ATTACKER}, application_name "hostile-${row.reason}", client 127.0.0.1`,
    );
    expect(String(warn.hint)).toMatch(/end (it|that session)/);

    // 2. metrics say so, and the other work goes on: polls and a scheduled backup
    const during = await waitFor(
      () => metrics(daemon),
      (t) => sample(t, 'pgmaintd_migrations_blocked', { reason: row.reason }) === 1 && /^pg_up 1$/m.test(t),
      15_000,
      250,
    );
    expect(sample(during, 'pgmaintd_migrations_pending')).toBeGreaterThanOrEqual(1);
    const mark = daemon.lines().length;
    await waitFor(
      async () =>
        daemon
          .lines()
          .slice(mark)
          .some((l) => l.msg === 'backup complete'),
      (x) => x,
      30_000,
      200,
    );
    expect(daemon.lines().some((l) => l.msg === 'migrations applied')).toBe(false);
    // at most one warning a minute for the same reason (this row lasts well under a minute so far)
    const warns = (l: LogLine) => l.level === 40 && l.reason === row.reason;
    expect(daemon.lines().filter(warns)).toHaveLength(1);

    // 3. once the session lets go, the migrations run, and the metrics clear
    await blocker.release();
    blocker = undefined;
    await daemon.waitForLog((l) => l.msg === 'migrations applied', 90_000);
    const after = await waitFor(
      () => metrics(daemon),
      (t) => sample(t, 'pgmaintd_migrations_pending') === 0,
      10_000,
      250,
    );
    for (const reason of ['lock_held', 'lock_wait', 'unreachable'])
      expect(sample(after, 'pgmaintd_migrations_blocked', { reason })).toBe(0);
    await row.after?.(db);
  } finally {
    const statuses = (await health?.()) ?? [];
    if (d) {
      expect(d.child.exitCode, d.output()).toBeNull(); // it never left
      d.child.kill('SIGTERM');
      expect((await d.exited).code).toBe(EXIT.OK);
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    await blocker?.release().catch(() => undefined);
    await db.drop();
    await other.drop();
  }
}

describe('start-up migrations held up by another session', () => {
  it('another role holds the migration lock at start: the daemon stays up, backs up, names it, and migrates once it is released', async () => {
    const dir = tempDir('pgmaintd-migblk-files-');
    writeFileSync(join(dir, '0001_t.sql'), 'CREATE TABLE t (id int);\n');
    await runRow({
      reason: 'lock_held',
      migrations: dir,
      async block(db) {
        const s = await otherSession(db, 'hostile-lock_held');
        await s.c.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, 'migrate']);
        return { pid: s.pid, release: () => s.c.end() };
      },
      async after(db) {
        const t = await once<{ t: string | null }>(db.url, "SELECT to_regclass('public.t')::text AS t");
        expect(t.rows[0]!.t).toBe('t');
      },
    });
  });

  it('a long open transaction keeps a pending CREATE INDEX CONCURRENTLY waiting past MIGRATE_LOCK_TIMEOUT: the daemon stays up, backs up, names it, retries, and migrates once it ends', async () => {
    const dir = tempDir('pgmaintd-migblk-files-');
    const first = tempDir('pgmaintd-migblk-first-');
    writeFileSync(
      join(first, '0001_t.sql'),
      'CREATE TABLE t (id int);\nINSERT INTO t SELECT generate_series(1, 1000);\n',
    );
    copyFileSync(join(first, '0001_t.sql'), join(dir, '0001_t.sql'));
    writeFileSync(
      join(dir, '0002_t_id.sql'),
      '-- pg-maintd: no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n',
    );
    await runRow({
      reason: 'lock_wait',
      migrations: dir,
      env: { MIGRATE_LOCK_TIMEOUT: '1s' },
      // Another database is backed up here: a pg_dump of this one is a long transaction too (the
      // README says so), and would make which session the index waits for depend on timing.
      backupDatabases: (_db, other) => other.name,
      async arrange(db) {
        const r = spawnCli(['migrate', 'up'], {
          ...cliEnv(db.url, tempDir('pgmaintd-migblk-unused-')),
          MIGRATIONS_DIR: first,
        });
        expect((await r.exited).code, r.output()).toBe(0);
      },
      async block(db) {
        // a report in a repeatable-read transaction, left open (as a long pg_dump keeps its snapshot)
        const s = await otherSession(db, 'hostile-lock_wait');
        await s.c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await s.c.query('SELECT 1');
        return {
          pid: s.pid,
          release: async () => {
            await s.c.query('COMMIT');
            await s.c.end();
          },
        };
      },
      async after(db) {
        const i = await once<{ valid: boolean }>(
          db.url,
          "SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 't_id_idx'::regclass",
        );
        expect(i.rows[0]!.valid).toBe(true);
      },
    });
  });
});
