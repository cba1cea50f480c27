// Another role in the database, given CREATE on public (the default before PostgreSQL 15): nothing it
// puts there runs as pg-maintd, fakes the migration history, or passes for a migration's index; and
// a schema named like pg-maintd's role (first on its default search_path) never receives the app.
import pg from 'pg';
import { cpSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/exit-codes.js';
import { cliEnv, runCli } from '../support/daemon.js';
import { adminUrl, createOwnedDatabase, withDatabase, type OwnedDatabase } from '../support/postgres.js';

let owned: OwnedDatabase;
let attacker: string;

async function asAttacker(sql: string): Promise<void> {
  await owned.admin(`SET ROLE ${attacker}; ${sql}`);
}

beforeEach(async () => {
  owned = await createOwnedDatabase('t_hostile');
  attacker = `${owned.role}_x`;
  await owned.admin(`CREATE ROLE ${attacker} NOLOGIN; GRANT CREATE, USAGE ON SCHEMA public TO ${attacker}`);
});
afterEach(async () => {
  await owned.drop();
  await owned.admin(`DROP ROLE IF EXISTS ${attacker}`).catch(() => undefined);
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  await c.query(`DROP ROLE IF EXISTS ${attacker}`).catch(() => undefined);
  await c.end();
});

async function rows(sql: string): Promise<unknown[]> {
  const c = new pg.Client({ connectionString: withDatabase(adminUrl(), owned.name) });
  await c.connect();
  try {
    return (await c.query(sql)).rows;
  } finally {
    await c.end();
  }
}

function env(dir = mkdtempSync(join(tmpdir(), 'pgmaintd-hostile-'))) {
  return cliEnv(owned.url, dir, { LOG_LEVEL: 'warn' });
}

describe('another role with CREATE on public', () => {
  it("its format(text, name, name) is never called by pg-maintd's own SQL (migrations, row counts)", async () => {
    await asAttacker(`CREATE FUNCTION public.format(text, name, name) RETURNS text LANGUAGE plpgsql AS
      $$BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END$$`);
    const e = env();
    // what it owns in public stops the migration files (below); pg-maintd's own SQL still runs
    const migrate = await runCli(['migrate', 'up'], e);
    expect(migrate.code, migrate.out).toBe(EXIT.DATAERR);
    expect(migrate.out).toMatch(/schema public, where other roles could plant code/);
    // status reads the history (exit 1: the migrations are pending, listed as such)
    const status = await runCli(['migrate', 'status'], e);
    expect(status.code, status.out).toBe(EXIT.FAILURE);
    expect(status.out).toMatch(/0001\s+initial_schema\s+pending/);
    const backup = await runCli(['backup'], e);
    expect(backup.code, backup.out).toBe(0);
    for (const out of [migrate.out, status.out, backup.out]) expect(out).not.toContain('hijacked');
  });

  it("a function matching a migration's call better than pg_catalog's never runs: nothing is applied, the owner is named (exit 65)", async () => {
    // to_tsvector('english', name) with name varchar: a (text, varchar) overload in public beats
    // pg_catalog.to_tsvector(regconfig, text), whatever the order of the search path
    const e = env();
    const first = mkdtempSync(join(tmpdir(), 'pgmaintd-hostile-mig-'));
    for (const f of ['0001_initial_schema.sql', '0002_idx_users_email_hash.sql'])
      cpSync(join('migrations', f), join(first, f));
    const r1 = await runCli(['migrate', 'up'], { ...e, MIGRATIONS_DIR: first });
    expect(r1.code, r1.out).toBe(0);
    await owned.admin(`SET ROLE ${owned.role};
      INSERT INTO public.users (email, password_hash) VALUES ('a@example.com', 'x');
      INSERT INTO public.projects (user_id, name) SELECT id, 'p' FROM public.users`);
    await asAttacker(`CREATE TABLE public.pwned (who text); GRANT INSERT ON public.pwned TO PUBLIC;
      CREATE FUNCTION public.to_tsvector(text, character varying) RETURNS tsvector LANGUAGE plpgsql IMMUTABLE AS
      $$BEGIN INSERT INTO public.pwned VALUES (current_user); EXECUTE format('GRANT ALL ON public.users TO %I', '${attacker}');
        RETURN pg_catalog.to_tsvector($1::regconfig, $2::text); END$$`);

    const r2 = await runCli(['migrate', 'up'], e);
    expect(r2.code, r2.out).toBe(EXIT.DATAERR);
    expect(r2.out).toMatch(
      new RegExp(
        `${attacker} owns objects in public, and pg-maintd's role is not a member.*Nothing was applied`,
      ),
    );
    expect(r2.out).toMatch(new RegExp(`fix: .*REASSIGN OWNED BY ${attacker} TO <the role that migrates>`));
    expect(r2.out).not.toMatch(/\n\s+at \S/);
    expect(await rows('SELECT who FROM public.pwned')).toEqual([]);
    expect(await rows(`SELECT version FROM public.pgmaintd_migrations ORDER BY 1`)).toEqual([
      { version: 1 },
      { version: 2 },
    ]);
    expect(
      await rows(
        `SELECT privilege_type FROM information_schema.role_table_grants WHERE grantee = '${attacker}' AND table_name = 'users'`,
      ),
    ).toEqual([]);

    // a DBA takes the schema back: the migrations run, on pg_catalog's function
    await owned.admin(`DROP OWNED BY ${attacker}`);
    const r3 = await runCli(['migrate', 'up'], e);
    expect(r3.code, r3.out).toBe(0);
    expect(await rows(`SELECT pg_get_indexdef('public.idx_projects_name_gin'::regclass) AS d`)).toEqual([
      { d: expect.stringContaining("to_tsvector('english'::regconfig, (name)::text)") },
    ]);
  });

  it('a login role that may create in public, set a trigger on its tables, or SET ROLE to one that may, stops the migrations before anything runs', async () => {
    const e = env();
    const cases: Array<[string, string, RegExp]> = [
      [
        'CREATE granted to PUBLIC (the default before PostgreSQL 15)',
        `CREATE ROLE ${attacker}_l LOGIN; GRANT CREATE ON SCHEMA public TO PUBLIC`,
        new RegExp(
          `${attacker}_l can create, replace or trigger objects in the schema public \\(CREATE is granted to PUBLIC there\\)[\\s\\S]*fix: .*REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
        ),
      ],
      [
        'a NOINHERIT member of a role with CREATE',
        `CREATE ROLE ${attacker}_l LOGIN NOINHERIT IN ROLE ${attacker}`,
        new RegExp(`${attacker}_l can create, replace or trigger objects in the schema public`),
      ],
      [
        "TRIGGER on one of the application's tables",
        `CREATE ROLE ${attacker}_l LOGIN; GRANT TRIGGER ON public.users TO ${attacker}_l`,
        new RegExp(`${attacker}_l can create, replace or trigger objects in the schema public`),
      ],
    ];
    const first = mkdtempSync(join(tmpdir(), 'pgmaintd-hostile-mig-'));
    cpSync(join('migrations', '0001_initial_schema.sql'), join(first, '0001_initial_schema.sql'));
    expect((await runCli(['migrate', 'up'], { ...e, MIGRATIONS_DIR: first })).code).toBe(0);
    for (const [name, grant, message] of cases) {
      await owned.admin(grant);
      try {
        const r = await runCli(['migrate', 'up'], e);
        expect(r.code, `${name}: ${r.out}`).toBe(EXIT.DATAERR);
        expect(r.out, name).toMatch(message);
        expect(await rows(`SELECT count(*)::int AS n FROM public.pgmaintd_migrations`), name).toEqual([
          { n: 1 },
        ]);
      } finally {
        await owned.admin(
          `REVOKE CREATE ON SCHEMA public FROM PUBLIC; DROP OWNED BY ${attacker}_l; DROP ROLE ${attacker}_l`,
        );
      }
    }
    const r = await runCli(['migrate', 'up'], e);
    expect(r.code, r.out).toBe(0);
  });

  it('a migration history it made is not trusted: nothing is applied, the fix is named (exit 65)', async () => {
    await asAttacker(`CREATE TABLE public.pgmaintd_migrations (version integer PRIMARY KEY, name text NOT NULL,
      checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer NOT NULL,
      baselined boolean NOT NULL DEFAULT false); GRANT SELECT, INSERT ON public.pgmaintd_migrations TO PUBLIC`);
    const r = await runCli(['migrate', 'up'], env());
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toMatch(
      /the migration history public\.pgmaintd_migrations belongs to \S+, a role pg-maintd's role is not: it is not trusted, and nothing was applied/,
    );
    expect(r.out).toMatch(/fix: only the role that applies the migrations may own and write it/);
  });

  it("an index under a migration's index name on another table is not taken for that migration's", async () => {
    // a superuser's (so the schema check above lets it be): the index check stands on its own
    await owned.admin(
      'CREATE TABLE public.decoy (email text); CREATE INDEX idx_users_email_hash ON public.decoy (email)',
    );
    const r = await runCli(['migrate', 'up'], env());
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toMatch(
      /builds index idx_users_email_hash, but public\.idx_users_email_hash exists already on table decoy, made by another role: nothing was done/,
    );
  });
});

describe("a schema named like pg-maintd's role", () => {
  it('never receives the application: the migrations build in public, and every backup holds them', async () => {
    await owned.admin(`CREATE SCHEMA ${owned.role} AUTHORIZATION ${owned.role}`);
    const dir = mkdtempSync(join(tmpdir(), 'pgmaintd-hostile-'));
    const migrate = await runCli(['migrate', 'up'], env(dir));
    expect(migrate.code, migrate.out).toBe(0);
    const c = new pg.Client({ connectionString: withDatabase(adminUrl(), owned.name) });
    await c.connect();
    const where = await c.query<{ schema: string }>(
      "SELECT relnamespace::regnamespace::text AS schema FROM pg_class WHERE relname = 'users' AND relkind = 'r'",
    );
    await c.end();
    expect(where.rows).toEqual([{ schema: 'public' }]);
    const backup = await runCli(['backup'], env(dir));
    expect(backup.code, backup.out).toBe(0);
    const key = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(backup.out)![1]!;
    const manifest = JSON.parse(readFileSync(join(dir, `${key}.manifest.json`), 'utf8')) as {
      rowCounts: Record<string, unknown>;
    };
    expect(Object.keys(manifest.rowCounts)).toEqual(
      expect.arrayContaining(['public.users', 'public.projects', 'public.tasks']),
    );
  });
});
