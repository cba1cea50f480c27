// The migration runner and the shipped migrations against a real server: the seed's schema index by
// index, concurrency, checksums, rollback, invalid-index repair, RLS as a non-owner role, and plans.
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';
import { OperatorError } from '../../src/core/errors.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { createLogger } from '../../src/log/logger.js';
import {
  baselineMigrations,
  migrateUp,
  migrationStatus,
  verifyMigrations,
  type MigrateOptions,
} from '../../src/migrate/runner.js';
import { SEED_SCHEMA } from '../support/seed.js';
import { adminUrl, createTestDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const logger = createLogger({ level: 'silent', format: 'json' });
const SHIPPED = join(PACKAGE_ROOT, 'migrations');

/** A fresh database of its own for each test. */
const freshDatabase = () => createTestDatabase('t_migr');

function options(url: string, dir = SHIPPED): MigrateOptions {
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
  };
}

function tempMigrations(files: Record<string, string>): string {
  const dir = tempDir('migr-');
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, name), sql);
  return dir;
}

async function rejection(p: Promise<unknown>): Promise<OperatorError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(OperatorError);
    return err as OperatorError;
  }
  throw new Error('expected the promise to reject');
}

// The seed guide's indexes, exactly: name -> the definition PostgreSQL reports for it.
const SEED_INDEXES: Record<string, string> = {
  idx_users_email: 'CREATE INDEX idx_users_email ON public.users USING btree (email)',
  idx_projects_user_id: 'CREATE INDEX idx_projects_user_id ON public.projects USING btree (user_id)',
  idx_projects_status: 'CREATE INDEX idx_projects_status ON public.projects USING btree (status)',
  idx_tasks_project_id: 'CREATE INDEX idx_tasks_project_id ON public.tasks USING btree (project_id)',
  idx_tasks_status: 'CREATE INDEX idx_tasks_status ON public.tasks USING btree (status)',
  idx_tasks_assigned_to: 'CREATE INDEX idx_tasks_assigned_to ON public.tasks USING btree (assigned_to)',
  idx_tasks_due_date: 'CREATE INDEX idx_tasks_due_date ON public.tasks USING btree (due_date)',
  idx_tasks_project_status:
    'CREATE INDEX idx_tasks_project_status ON public.tasks USING btree (project_id, status)',
  idx_projects_user_status:
    'CREATE INDEX idx_projects_user_status ON public.projects USING btree (user_id, status)',
  idx_users_email_hash: 'CREATE INDEX idx_users_email_hash ON public.users USING hash (email)',
  idx_projects_name_gin:
    "CREATE INDEX idx_projects_name_gin ON public.projects USING gin (to_tsvector('english'::regconfig, (name)::text))",
  idx_tasks_search_gin:
    "CREATE INDEX idx_tasks_search_gin ON public.tasks USING gin (to_tsvector('english'::regconfig, (((title)::text || ' '::text) || COALESCE(description, ''::text))))",
  idx_projects_active:
    "CREATE INDEX idx_projects_active ON public.projects USING btree (user_id, created_at) WHERE ((status)::text = 'active'::text)",
  idx_tasks_pending:
    "CREATE INDEX idx_tasks_pending ON public.tasks USING btree (project_id, created_at) WHERE ((status)::text = 'pending'::text)",
  // the constraints' own indexes
  users_pkey: 'CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)',
  users_email_key: 'CREATE UNIQUE INDEX users_email_key ON public.users USING btree (email)',
  projects_pkey: 'CREATE UNIQUE INDEX projects_pkey ON public.projects USING btree (id)',
  tasks_pkey: 'CREATE UNIQUE INDEX tasks_pkey ON public.tasks USING btree (id)',
};

describe('the shipped migrations', () => {
  it('build the seed schema on a fresh database: columns, defaults, keys, every index, trigger, policies; a second run does nothing', async () => {
    const db = await freshDatabase();
    try {
      const first = await migrateUp(options(db.url));
      expect(first.applied.map((a) => a.file)).toEqual([
        '0001_initial_schema.sql',
        '0002_idx_users_email_hash.sql',
        '0003_idx_projects_name_gin.sql',
        '0004_idx_tasks_search_gin.sql',
        '0005_idx_projects_active.sql',
        '0006_idx_tasks_pending.sql',
        '0007_row_level_security.sql',
      ]);
      const cols = await db.pool.query<{
        t: string;
        c: string;
        type: string;
        nullable: string;
        def: string | null;
      }>(
        `SELECT table_name AS t, column_name AS c, data_type || coalesce('(' || character_maximum_length || ')', '') AS type,
                is_nullable AS nullable, column_default AS def
           FROM information_schema.columns WHERE table_schema = 'public' AND table_name IN ('users', 'projects', 'tasks')
          ORDER BY table_name, ordinal_position`,
      );
      const col = (t: string, c: string) => cols.rows.find((r) => r.t === t && r.c === c);
      expect(cols.rows.filter((r) => r.t === 'users').map((r) => r.c)).toEqual([
        'id',
        'email',
        'password_hash',
        'first_name',
        'last_name',
        'role',
        'created_at',
        'updated_at',
        'last_login',
      ]);
      expect(cols.rows.filter((r) => r.t === 'projects').map((r) => r.c)).toEqual([
        'id',
        'user_id',
        'name',
        'description',
        'status',
        'settings',
        'created_at',
        'updated_at',
      ]);
      expect(cols.rows.filter((r) => r.t === 'tasks').map((r) => r.c)).toEqual([
        'id',
        'project_id',
        'title',
        'description',
        'status',
        'priority',
        'assigned_to',
        'due_date',
        'metadata',
        'created_at',
        'updated_at',
      ]);
      expect(col('users', 'id')).toMatchObject({ type: 'uuid', def: 'gen_random_uuid()' });
      expect(col('users', 'email')).toMatchObject({ type: 'character varying(255)', nullable: 'NO' });
      expect(col('users', 'role')!.def).toBe("'user'::character varying");
      expect(col('users', 'created_at')).toMatchObject({ type: 'timestamp with time zone', def: 'now()' });
      expect(col('projects', 'settings')).toMatchObject({ type: 'jsonb', def: "'{}'::jsonb" });
      expect(col('projects', 'status')!.def).toBe("'active'::character varying");
      expect(col('tasks', 'priority')).toMatchObject({
        type: 'character varying(20)',
        def: "'medium'::character varying",
      });
      expect(col('tasks', 'status')!.def).toBe("'pending'::character varying");
      expect(col('tasks', 'metadata')!.def).toBe("'{}'::jsonb");

      const fks = await db.pool.query<{ def: string; tbl: string }>(
        `SELECT conrelid::regclass::text AS tbl, pg_get_constraintdef(oid) AS def FROM pg_constraint
          WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1, 2`,
      );
      expect(fks.rows).toEqual([
        { tbl: 'projects', def: 'FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE' },
        { tbl: 'tasks', def: 'FOREIGN KEY (assigned_to) REFERENCES users(id)' },
        { tbl: 'tasks', def: 'FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE' },
      ]);

      const idx = await db.pool.query<{ name: string; def: string; valid: boolean }>(
        `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def, i.indisvalid AS valid
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid IN ('users'::regclass, 'projects'::regclass, 'tasks'::regclass)`,
      );
      expect(Object.fromEntries(idx.rows.map((r) => [r.name, r.def]))).toEqual(SEED_INDEXES);
      expect(idx.rows.every((r) => r.valid)).toBe(true);

      const policies = await db.pool.query<{
        tablename: string;
        policyname: string;
        cmd: string;
        qual: string;
      }>("SELECT tablename, policyname, cmd, qual FROM pg_policies WHERE schemaname = 'public' ORDER BY 1");
      expect(policies.rows.map((p) => [p.tablename, p.policyname, p.cmd])).toEqual([
        ['projects', 'Users can only see their own projects', 'ALL'],
        ['tasks', 'Users can only see tasks in their projects', 'ALL'],
      ]);
      expect(policies.rows[0]!.qual).toContain("current_setting('app.user_id'::text, true)"); // no auth schema here
      const rls = await db.pool.query<{ relname: string; relrowsecurity: boolean }>(
        "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN ('users', 'projects', 'tasks') ORDER BY 1",
      );
      expect(rls.rows).toEqual([
        { relname: 'projects', relrowsecurity: true },
        { relname: 'tasks', relrowsecurity: true },
        { relname: 'users', relrowsecurity: false },
      ]);

      // updated_at follows an UPDATE
      const u = await db.pool.query<{ id: string; updated_at: Date }>(
        "INSERT INTO users (email, password_hash, created_at, updated_at) VALUES ('a@x', 'h', now() - interval '1 day', now() - interval '1 day') RETURNING id, updated_at",
      );
      const after = await db.pool.query<{ updated_at: Date }>(
        "UPDATE users SET first_name = 'A' WHERE id = $1 RETURNING updated_at",
        [u.rows[0]!.id],
      );
      expect(after.rows[0]!.updated_at.getTime()).toBeGreaterThan(
        u.rows[0]!.updated_at.getTime() + 3_600_000,
      );

      // history: name, checksum, when, how long
      const hist = await db.pool.query<{
        version: number;
        name: string;
        checksum: string;
        duration_ms: number;
      }>('SELECT version, name, checksum, duration_ms FROM pgmaintd_migrations ORDER BY version');
      expect(hist.rows).toHaveLength(7);
      expect(hist.rows[0]).toMatchObject({ version: 1, name: 'initial_schema' });
      expect(hist.rows[0]!.checksum).toMatch(/^[0-9a-f]{64}$/);

      const second = await migrateUp(options(db.url));
      expect(second.applied).toEqual([]);
      expect((await migrationStatus(options(db.url))).every((r) => r.state === 'applied')).toBe(true);
      expect(await verifyMigrations(options(db.url))).toEqual({ ok: true, problems: [], pending: [] });
    } finally {
      await db.drop();
    }
  });

  it('two runners started at the same moment: the schema is applied once, both succeed', async () => {
    const db = await freshDatabase();
    try {
      const [a, b] = await Promise.all([migrateUp(options(db.url)), migrateUp(options(db.url))]);
      expect(a.applied.length + b.applied.length).toBe(7);
      expect([a.waitedForLock, b.waitedForLock].filter(Boolean)).toHaveLength(1);
      const n = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pgmaintd_migrations');
      expect(Number(n.rows[0]!.n)).toBe(7);
    } finally {
      await db.drop();
    }
  });

  it('users see only their own projects and tasks, as a non-owner application role', async () => {
    const db = await freshDatabase();
    const role = `app_${db.name}`;
    try {
      await migrateUp(options(db.url));
      await db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD 'app-pw';
        GRANT SELECT, INSERT, UPDATE, DELETE ON users, projects, tasks TO ${role}`);
      const ids = await db.pool.query<{ a: string; b: string }>(
        `WITH a AS (INSERT INTO users (email, password_hash) VALUES ('a@x', 'h') RETURNING id),
              b AS (INSERT INTO users (email, password_hash) VALUES ('b@x', 'h') RETURNING id)
         SELECT (SELECT id FROM a) AS a, (SELECT id FROM b) AS b`,
      );
      const { a, b } = ids.rows[0]!;
      await db.pool.query(
        `INSERT INTO projects (user_id, name) VALUES ($1, 'A one'), ($1, 'A two'), ($2, 'B one');
         INSERT INTO tasks (project_id, title) SELECT id, 'task of ' || name FROM projects`
          .replace(/\$1/g, `'${a}'`)
          .replace(/\$2/g, `'${b}'`),
      );
      const u = new URL(db.url);
      u.username = role;
      u.password = 'app-pw';
      const app = new pg.Client({ connectionString: u.toString() });
      await app.connect();
      try {
        await app.query('BEGIN');
        await app.query(`SELECT set_config('app.user_id', $1, true)`, [a]);
        const projects = await app.query<{ name: string }>('SELECT name FROM projects ORDER BY name');
        expect(projects.rows.map((r) => r.name)).toEqual(['A one', 'A two']);
        const tasks = await app.query<{ title: string }>('SELECT title FROM tasks ORDER BY title');
        expect(tasks.rows.map((r) => r.title)).toEqual(['task of A one', 'task of A two']);
        const upd = await app.query("UPDATE projects SET name = 'hijacked' WHERE user_id = $1", [b]);
        expect(upd.rowCount).toBe(0);
        const delT = await app.query("DELETE FROM tasks WHERE title = 'task of B one'");
        expect(delT.rowCount).toBe(0);
        const delP = await app.query('DELETE FROM projects WHERE user_id = $1', [b]);
        expect(delP.rowCount).toBe(0);
        // and cannot create a project for someone else
        await expect(
          app.query("INSERT INTO projects (user_id, name) VALUES ($1, 'forged')", [b]),
        ).rejects.toThrow(/row-level security/);
        await app.query('ROLLBACK');
        // without app.user_id nothing is visible
        expect((await app.query('SELECT * FROM projects')).rowCount).toBe(0);
      } finally {
        await app.end();
      }
      const intact = await db.pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM projects WHERE name = 'B one'",
      );
      expect(Number(intact.rows[0]!.n)).toBe(1);
    } finally {
      await db.drop();
      const admin = new pg.Client({ connectionString: adminUrl() });
      await admin.connect();
      await admin.query(`DROP ROLE IF EXISTS ${role}`);
      await admin.end();
    }
  });

  it("the seed's queries use the intended indexes on enough rows", async () => {
    const db = await freshDatabase();
    try {
      await migrateUp(options(db.url));
      await db.pool.query(`
        INSERT INTO users (email, password_hash) SELECT 'u' || g || '@x', 'h' FROM generate_series(1, 2000) g;
        INSERT INTO projects (user_id, name, description, status, created_at)
          SELECT u.id, CASE WHEN p = 1 AND random() < 0.01 THEN 'zebra launch' ELSE 'project ' || p END,
                 'about ' || p, CASE WHEN p % 4 = 0 THEN 'archived' ELSE 'active' END, now() - p * interval '1 hour'
            FROM users u CROSS JOIN generate_series(1, 10) p;
        INSERT INTO tasks (project_id, title, description, status)
          SELECT pr.id, CASE WHEN t = 1 AND random() < 0.005 THEN 'quokka audit' ELSE 'task ' || t END, 'details ' || t,
                 CASE WHEN t % 5 = 0 THEN 'pending' ELSE 'done' END
            FROM projects pr CROSS JOIN generate_series(1, 8) t;
        ANALYZE users; ANALYZE projects; ANALYZE tasks;`);
      const one = await db.pool.query<{ user_id: string; project_id: string }>(
        'SELECT p.user_id, p.id AS project_id FROM projects p LIMIT 1',
      );
      const { user_id, project_id } = one.rows[0]!;
      const plan = async (sql: string, params: unknown[]) =>
        (await db.pool.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, params)).rows
          .map((r) => r['QUERY PLAN'])
          .join('\n');

      // getPaginatedProjects: a user's projects, newest first, a page at a time
      const page = await plan(
        'SELECT * FROM projects WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20 OFFSET 0',
        [user_id],
      );
      expect(page).toMatch(
        /Index Scan.* on (idx_projects_user_id|idx_projects_user_status)|Bitmap Index Scan on (idx_projects_user_id|idx_projects_user_status)/,
      );
      const activePage = await plan(
        "SELECT * FROM projects WHERE user_id = $1 AND status = 'active' ORDER BY created_at DESC LIMIT 20",
        [user_id],
      );
      expect(activePage).toMatch(/idx_projects_active/);
      // full-text search on projects and tasks
      expect(
        await plan(
          "SELECT * FROM projects WHERE to_tsvector('english', name) @@ plainto_tsquery('english', $1)",
          ['zebra'],
        ),
      ).toMatch(/Bitmap Index Scan on idx_projects_name_gin/);
      expect(
        await plan(
          "SELECT * FROM tasks WHERE to_tsvector('english', title || ' ' || COALESCE(description, '')) @@ plainto_tsquery('english', $1)",
          ['quokka'],
        ),
      ).toMatch(/Bitmap Index Scan on idx_tasks_search_gin/);
      // pending tasks of a project
      expect(
        await plan("SELECT * FROM tasks WHERE project_id = $1 AND status = 'pending' ORDER BY created_at", [
          project_id,
        ]),
      ).toMatch(/idx_tasks_pending/);
    } finally {
      await db.drop();
    }
  });
});

describe('the runner', () => {
  it('refuses an applied migration whose file changed, naming the file', async () => {
    const db = await freshDatabase();
    const dir = tempDir('migr-');
    cpSync(SHIPPED, dir, { recursive: true });
    try {
      await migrateUp(options(db.url, dir));
      const f = join(dir, '0001_initial_schema.sql');
      writeFileSync(f, `${readFileSync(f, 'utf8')}\n-- a harmless-looking edit\n`);
      const err = await rejection(migrateUp(options(db.url, dir)));
      expect(err.message).toContain('0001_initial_schema.sql');
      expect(err.message).toContain('changed after it was applied');
      expect(err.exitCode).toBe(EXIT.DATAERR);
      const v = await verifyMigrations(options(db.url, dir));
      expect(v.ok).toBe(false);
      expect(v.problems.join()).toContain('0001_initial_schema.sql');
      expect((await migrationStatus(options(db.url, dir)))[0]!.state).toBe('changed');
    } finally {
      await db.drop();
    }
  });

  it('rolls a failing migration back and records nothing of it', async () => {
    const db = await freshDatabase();
    const dir = tempMigrations({
      '0001_a.sql': 'CREATE TABLE a (id int);',
      '0002_b.sql': 'CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\nSELECT 1 / 0;\n',
    });
    try {
      const err = await rejection(migrateUp(options(db.url, dir)));
      expect(err.message).toMatch(/0002_b\.sql failed: division by zero \(SQLSTATE 22012\); rolled back/);
      const t = await db.pool.query<{ a: string | null; b: string | null }>(
        "SELECT to_regclass('a')::text AS a, to_regclass('b')::text AS b",
      );
      expect(t.rows[0]).toEqual({ a: 'a', b: null });
      const h = await db.pool.query<{ version: number }>('SELECT version FROM pgmaintd_migrations');
      expect(h.rows.map((r) => r.version)).toEqual([1]);
    } finally {
      await db.drop();
    }
  });

  it('a unique concurrent index over duplicates fails and is left INVALID; once the duplicates are fixed, the next run rebuilds it', async () => {
    const db = await freshDatabase();
    const dir = tempMigrations({
      '0001_t.sql': "CREATE TABLE t (email text); INSERT INTO t VALUES ('a'), ('a'), ('b');",
      '0002_t_email_key.sql':
        '-- pg-maintd: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_email_key ON t (email);\n',
    });
    try {
      const err = await rejection(migrateUp(options(db.url, dir)));
      expect(err.message).toMatch(/0002_t_email_key\.sql failed.*could not create unique index.*INVALID/s);
      const valid = async () =>
        (
          await db.pool.query<{ v: boolean }>(
            "SELECT indisvalid AS v FROM pg_index WHERE indexrelid = 't_email_key'::regclass",
          )
        ).rows[0]?.v;
      expect(await valid()).toBe(false);
      expect((await verifyMigrations(options(db.url, dir))).pending).toEqual(['0002_t_email_key.sql']);
      // IF NOT EXISTS alone would now keep the broken index; the runner drops and rebuilds it
      await db.pool.query("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t WHERE email = 'a')");
      const r = await migrateUp(options(db.url, dir));
      expect(r.repaired).toEqual(['public.t_email_key']);
      expect(await valid()).toBe(true);
      expect((await verifyMigrations(options(db.url, dir))).ok).toBe(true);
    } finally {
      await db.drop();
    }
  });

  it('refuses a no-transaction file with more than one statement', async () => {
    const db = await freshDatabase();
    const dir = tempMigrations({
      '0001_two.sql': "-- pg-maintd: no-transaction\nCREATE TABLE x (id int); SELECT ';';\n",
    });
    try {
      const err = await rejection(migrateUp(options(db.url, dir)));
      expect(err.message).toContain('0001_two.sql is marked no-transaction but holds 2 statements');
    } finally {
      await db.drop();
    }
  });

  it('leaves a database that holds the tables without a history alone, and adopts it with baseline', async () => {
    const db = await freshDatabase();
    try {
      await db.pool.query(SEED_SCHEMA);
      const err = await rejection(migrateUp(options(db.url)));
      expect(err.message).toMatch(
        /already holds projects, tasks, users but has no migration history: nothing was changed/,
      );
      expect(err.hint).toContain('migrate baseline');
      const t = await db.pool.query<{ h: string | null }>(
        "SELECT to_regclass('pgmaintd_migrations')::text AS h",
      );
      expect(t.rows[0]!.h).toBeNull();
      expect(await baselineMigrations(options(db.url))).toHaveLength(7);
      const rows = await migrationStatus(options(db.url));
      expect(rows.every((r) => r.state === 'applied' && r.baselined)).toBe(true);
      expect((await migrateUp(options(db.url))).applied).toEqual([]);
      const again = await rejection(baselineMigrations(options(db.url)));
      expect(again.message).toContain('already has a migration history');
    } finally {
      await db.drop();
    }
  });
});
