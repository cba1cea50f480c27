// `pg-maintd migrate ...` and the daemon's MIGRATE_ON_START through the real CLI: exit codes,
// concurrent runners, and a bootstrap that never half-applies over someone else's schema and never
// takes the daemon down with it (locks and blocking sessions: migrate-blocked.test.ts).
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { LOCK_NAMESPACE } from '../../src/db/advisory-lock.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { spawnCli, startDaemon, cliEnv } from '../support/daemon.js';
import { createTestDatabase } from '../support/postgres.js';
import { SEED_SCHEMA } from '../support/seed.js';
import { tempDir } from '../support/temp.js';

/** A database of its own, and the daemon's env for it (the password in PGPASSWORD, not the URL). */
async function freshDatabase() {
  const db = await createTestDatabase('t_mige2e');
  return {
    pool: db.pool,
    url: db.url,
    drop: db.drop,
    env: cliEnv(db.url, tempDir('mige2e-')),
  };
}

async function run(args: string[], env: Record<string, string>) {
  const cli = spawnCli(args, env);
  const { code } = await cli.exited;
  return { code, out: cli.output() };
}

describe('migrate commands', () => {
  it('status says pending (exit 1); two `migrate up` at once both exit 0 and apply once; then status and verify exit 0', async () => {
    const db = await freshDatabase();
    try {
      const before = await run(['migrate', 'status'], db.env);
      expect(before.code).toBe(EXIT.FAILURE);
      expect(before.out).toMatch(/0001\s+initial_schema\s+pending/);
      const [a, b] = await Promise.all([run(['migrate', 'up'], db.env), run(['migrate', 'up'], db.env)]);
      expect([a.code, b.code]).toEqual([0, 0]);
      const applied = `${a.out}${b.out}`.match(/^applied 0\d{3}_/gm) ?? [];
      expect(applied).toHaveLength(7);
      const n = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pgmaintd_migrations');
      expect(Number(n.rows[0]!.n)).toBe(7);
      const status = await run(['migrate', 'status', '--json'], db.env);
      expect(status.code).toBe(0);
      const rows = JSON.parse(status.out.split('\n').find((l) => l.startsWith('['))!) as Array<{
        state: string;
      }>;
      expect(rows.map((r) => r.state)).toEqual(Array(7).fill('applied'));
      const verify = await run(['migrate', 'verify'], db.env);
      expect(verify.code).toBe(0);
      expect(verify.out).toContain('applied migrations are intact');
    } finally {
      await db.drop();
    }
  });

  it('an unreachable database: exit 69 with what to check', async () => {
    const db = await freshDatabase();
    try {
      const u = new URL(db.env.DATABASE_URL);
      u.port = '1'; // nothing listens there
      const r = await run(['migrate', 'up'], { ...db.env, DATABASE_URL: u.toString() });
      expect(r.code).toBe(EXIT.UNAVAILABLE);
      expect(r.out).toMatch(/cannot use the database at .*fix: is PostgreSQL running/s);
    } finally {
      await db.drop();
    }
  });
  it('`migrate up` while another session holds the migration lock: exit 69 after MIGRATE_LOCK_WAIT, naming that session', async () => {
    const db = await freshDatabase();
    const holder = new pg.Client({ connectionString: db.url, application_name: 'a-dba-console' });
    await holder.connect();
    try {
      const { pid } = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!;
      await holder.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, 'migrate']);
      const r = await run(['migrate', 'up'], { ...db.env, MIGRATE_LOCK_WAIT: '1s' });
      expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
      expect(r.out).toMatch(
        new RegExp(
          `pg-maintd: another session held the migration lock for over 1000 ms: pid ${pid} \\(role postgres, application_name "a-dba-console", client 127\\.0\\.0\\.1\\)\\n  fix: .*pg_terminate_backend`,
        ),
      );
    } finally {
      await holder.end();
      await db.drop();
    }
  });
});

describe('MIGRATE_ON_START', () => {
  it('the daemon applies the migrations in the background, its metrics say so; a restart finds nothing to do', async () => {
    const db = await freshDatabase();
    try {
      const d = await startDaemon({ ...db.env, MIGRATE_ON_START: 'true' });
      try {
        await d.waitForLog((l) => l.msg === 'migrations applied', 30_000);
        const t = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pgmaintd_migrations');
        expect(Number(t.rows[0]!.n)).toBe(7);
        const text = await (await fetch(`${d.base}/metrics`)).text();
        expect(text).toMatch(/^pgmaintd_migrations_pending 0$/m);
        expect(text).not.toMatch(/^pgmaintd_migrations_(blocked|failed)\{reason="\w+"\} 1$/m);
        expect(text).toMatch(/^pgmaintd_migrations_blocked\{reason="lock_held"\} 0$/m);
        expect(text).toMatch(/^pgmaintd_migrations_failed\{reason="no_history"\} 0$/m);
      } finally {
        d.child.kill('SIGTERM');
        await d.exited;
      }
      // a restart finds nothing to do
      const again = await startDaemon({ ...db.env, MIGRATE_ON_START: 'true' });
      try {
        await again.waitForLog((l) => l.msg === 'schema is up to date', 30_000);
      } finally {
        again.child.kill('SIGTERM');
        await again.exited;
      }
    } finally {
      await db.drop();
    }
  });

  it('SIGTERM while the start-up migrations wait for an unreachable database: a prompt, clean exit', async () => {
    const db = await freshDatabase();
    try {
      const u = new URL(db.env.DATABASE_URL);
      u.port = '1'; // nothing listens there
      const cli = spawnCli(['run'], {
        ...db.env,
        DATABASE_URL: u.toString(),
        MIGRATE_ON_START: 'true',
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: '0',
      });
      await cli.waitForLog((l) => l.msg.startsWith('database unreachable: migrations'));
      const t0 = Date.now();
      cli.child.kill('SIGTERM');
      const { code } = await cli.exited;
      expect(code).toBe(EXIT.OK);
      expect(Date.now() - t0).toBeLessThan(5000); // not the 25 s grace period
    } finally {
      await db.drop();
    }
  });

  it('a database with the tables but no history: the daemon changes nothing, keeps running and says to `migrate baseline`; baselined, status says applied and the daemon applies nothing', async () => {
    const db = await freshDatabase();
    try {
      await db.pool.query(SEED_SCHEMA);
      const d = await startDaemon({ ...db.env, MIGRATE_ON_START: 'true' });
      try {
        const error = await d.waitForLog((l) => l.msg.startsWith('start-up migrations stopped'), 30_000);
        expect(error.level).toBe(50);
        expect(error.reason).toBe('no_history');
        expect(error.msg).toContain('has no migration history: nothing was changed');
        expect(String(error.hint)).toContain('pg-maintd migrate baseline');
        const text = await (await fetch(`${d.base}/metrics`)).text();
        expect(text).toMatch(/^pgmaintd_migrations_failed\{reason="no_history"\} 1$/m);
        expect(text).toMatch(/^pgmaintd_migrations_pending 7$/m);
        expect((await fetch(`${d.base}/healthz`)).status).toBe(200);
        const h = await db.pool.query<{ h: string | null }>(
          "SELECT to_regclass('pgmaintd_migrations')::text AS h",
        );
        expect(h.rows[0]!.h).toBeNull();
        expect(d.child.exitCode).toBeNull();
      } finally {
        d.child.kill('SIGTERM');
        expect((await d.exited).code).toBe(EXIT.OK);
      }
      const baseline = await run(['migrate', 'baseline'], db.env);
      expect(baseline.code).toBe(0);
      expect(baseline.out).toMatch(
        /^baselined 7 migrations: recorded as applied with their checksums, none of them run:\n {2}0001_initial_schema\.sql\n(?: {2}\S+\n){6}`pg-maintd migrate status` lists them/m,
      );
      // all applied, marked as baselined; a second baseline refuses, saying what to use instead
      const status = await run(['migrate', 'status'], db.env);
      expect(status.code, status.out).toBe(0);
      expect(status.out.match(/^\d{4} .* applied .*\(baselined\)$/gm)).toHaveLength(7);
      const twice = await run(['migrate', 'baseline'], db.env);
      expect(twice.code, twice.out).toBe(EXIT.DATAERR);
      expect(twice.out).toMatch(
        /already has a migration history \(7 applied\)\n {2}fix: nothing was recorded: .*`pg-maintd migrate status` shows what is applied/,
      );
      // and the daemon applies nothing
      const restarted = await startDaemon({ ...db.env, MIGRATE_ON_START: 'true' });
      try {
        await restarted.waitForLog((l) => l.msg === 'schema is up to date', 30_000);
        expect(restarted.lines().some((l) => l.msg === 'applying migration')).toBe(false);
        const rls = await db.pool.query<{ rls: boolean }>(
          "SELECT relrowsecurity AS rls FROM pg_class WHERE oid = 'tasks'::regclass",
        );
        expect(rls.rows[0]!.rls).toBe(false); // 0007 was recorded, never run
      } finally {
        restarted.child.kill('SIGTERM');
        expect((await restarted.exited).code).toBe(EXIT.OK);
      }
    } finally {
      await db.drop();
    }
  });

  it('a monitoring-only role (pg_monitor, no CREATE): the daemon keeps running and says how to migrate instead', async () => {
    const db = await createTestDatabase('t_migmon');
    const role = `mon_${Math.random().toString(36).slice(2, 8)}`;
    const password = `pw-${Math.random().toString(36).slice(2)}`;
    try {
      await db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}' IN ROLE pg_monitor`);
      await db.pool.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
      const u = new URL(db.url);
      u.username = role;
      u.password = '';
      const d = await startDaemon({
        DATABASE_URL: u.toString(),
        PGPASSWORD: password,
        DB_SSL_MODE: 'disable',
        BACKUP_DIR: tempDir('migmon-'),
        BACKUP_SCHEDULE: 'off',
        MIGRATE_ON_START: 'true',
      });
      try {
        const error = await d.waitForLog((l) => l.msg.startsWith('start-up migrations stopped'), 30_000);
        expect(error.reason).toBe('permission_denied');
        expect(error.msg).toMatch(
          /may not apply the schema migrations \(MIGRATE_ON_START\): .*permission denied/,
        );
        expect(String(error.hint)).toContain('MIGRATE_ON_START=false');
        const text = await (await fetch(`${d.base}/metrics`)).text();
        expect(text).toMatch(/^pgmaintd_migrations_failed\{reason="permission_denied"\} 1$/m);
        expect(text).toMatch(/^pg_up 1$/m); // monitoring goes on
        expect(d.output()).not.toContain(password);
        expect(d.output()).not.toMatch(/\n\s+at /);
      } finally {
        d.child.kill('SIGTERM');
        expect((await d.exited).code).toBe(EXIT.OK);
      }
    } finally {
      await db.pool.query(`DROP ROLE IF EXISTS ${role}`);
      await db.drop();
    }
  });
});
