// Another role in the database, given CREATE on public (the default before PostgreSQL 15): nothing it
// puts there runs as pg-maintd, fakes the migration history, or passes for a migration's index; and
// a schema named like pg-maintd's role (first on its default search_path) never receives the app.
import pg from 'pg';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/core/exit-codes.js';
import { cliEnv, runCli, waitFor } from '../support/daemon.js';
import { adminUrl, createOwnedDatabase, withDatabase, type OwnedDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

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

function env(dir = tempDir('pgmaintd-hostile-')) {
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
    const first = tempDir('pgmaintd-hostile-mig-');
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
    const first = tempDir('pgmaintd-hostile-mig-');
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

describe('what another role left behind, or slips in while the migrations run', () => {
  const login = () => `${attacker}_l`;
  afterEach(async () => {
    await owned.admin(`DROP OWNED BY ${login()}; DROP ROLE IF EXISTS ${login()}`).catch(() => undefined);
    const c = new pg.Client({ connectionString: adminUrl() });
    await c.connect();
    await c.query(`DROP ROLE IF EXISTS ${login()}`).catch(() => undefined);
    await c.end();
  });

  function firstOnly(): string {
    const dir = tempDir('pgmaintd-hostile-mig-');
    cpSync(join('migrations', '0001_initial_schema.sql'), join(dir, '0001_initial_schema.sql'));
    return dir;
  }

  it('default privileges that would give it TRIGGER on the tables pg-maintd makes: nothing is made (exit 65)', async () => {
    await owned.admin(`CREATE ROLE ${login()} LOGIN;
      ALTER DEFAULT PRIVILEGES FOR ROLE ${owned.role} IN SCHEMA public GRANT ALL ON TABLES TO ${login()}`);
    const r = await runCli(['migrate', 'up'], env());
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toContain(`${login()} can create, replace or trigger objects in the schema public`);
    // refused before the history table (which would have come with TRIGGER for it) was made
    expect(await rows(`SELECT pg_catalog.to_regclass('public.pgmaintd_migrations') IS NULL AS none`)).toEqual(
      [{ none: true }],
    );
  });

  it('a trigger it hung on a table while it could, whose privilege was taken back since, stops the migrations', async () => {
    const e = env();
    expect((await runCli(['migrate', 'up'], { ...e, MIGRATIONS_DIR: firstOnly() })).code).toBe(0);
    await owned.admin(`CREATE ROLE ${login()} LOGIN; GRANT TRIGGER ON public.users TO ${login()};
      CREATE SCHEMA ${login()} AUTHORIZATION ${login()}`);
    await owned.admin(`SET ROLE ${login()};
      CREATE FUNCTION ${login()}.f() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN EXECUTE format('GRANT ALL ON public.users TO %I', '${login()}'); RETURN NEW; END$$;
      CREATE TRIGGER t AFTER UPDATE ON public.users FOR EACH STATEMENT EXECUTE FUNCTION ${login()}.f()`);
    // the DBA takes the privilege back, as the first refusal would have said: the trigger stays
    await owned.admin(`REVOKE TRIGGER ON public.users FROM ${login()}`);
    const r = await runCli(['migrate', 'up'], e);
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toContain(`trigger t on public.users calls function ${login()}.f() of ${login()}`);
    expect(r.out).toMatch(/fix: .*drop those triggers/);
    expect(await rows(`SELECT count(*)::int AS n FROM public.pgmaintd_migrations`)).toEqual([{ n: 1 }]);
  });

  it('a column grant on the migration history is a way to write it: not trusted (exit 65)', async () => {
    const e = env();
    expect((await runCli(['migrate', 'up'], { ...e, MIGRATIONS_DIR: firstOnly() })).code).toBe(0);
    await owned.admin(`CREATE ROLE ${login()} LOGIN;
      GRANT INSERT (version, name, checksum, duration_ms) ON public.pgmaintd_migrations TO ${login()}`);
    const r = await runCli(['migrate', 'up'], e);
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toContain(`the migration history public.pgmaintd_migrations may be changed by ${login()}`);
  });

  it('a schema auth made by a role with CREATE on the database never decides the row-level security', async () => {
    await owned.admin(`CREATE ROLE ${login()} LOGIN; GRANT CREATE ON DATABASE ${owned.name} TO ${login()}`);
    await owned.admin(`SET ROLE ${login()}; CREATE SCHEMA auth;
      CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql AS $$SELECT NULL::uuid$$`);
    const r = await runCli(['migrate', 'up'], env());
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toContain(`the schema auth when it exists, and it belongs to ${login()}`);
    await owned.admin(`DROP SCHEMA auth CASCADE`);
    const again = await runCli(['migrate', 'up'], env());
    expect(again.code, again.out).toBe(0);
    expect(
      await rows(`SELECT count(*)::int AS n FROM pg_catalog.pg_policies WHERE qual LIKE '%auth.uid%'`),
    ).toEqual([{ n: 0 }]);
  });

  it('a function planted while a migration runs, by a session that kept a role taken back since, rolls that migration back', async () => {
    // a stand-in for a long migration over real data: it waits on a lock the test holds
    const dir = firstOnly();
    writeFileSync(join(dir, '0002_slow.sql'), 'SELECT pg_catalog.pg_advisory_xact_lock(424242);\n');
    await owned.admin(`CREATE ROLE ${login()} LOGIN PASSWORD 'x-${owned.password}' IN ROLE ${attacker};
      GRANT CONNECT ON DATABASE ${owned.name} TO ${login()}`);
    const url = new URL(owned.url);
    url.username = login();
    url.password = `x-${owned.password}`;
    const mal = new pg.Client({ connectionString: url.toString() });
    const holder = new pg.Client({ connectionString: withDatabase(adminUrl(), owned.name) });
    await Promise.all([mal.connect(), holder.connect()]);
    try {
      await mal.query(`SET ROLE ${attacker}`);
      await owned.admin(`REVOKE ${attacker} FROM ${login()}`); // its open session keeps acting as it
      await holder.query('SELECT pg_catalog.pg_advisory_lock(424242)');
      const run = runCli(['migrate', 'up'], { ...env(), MIGRATIONS_DIR: dir, MIGRATE_LOCK_TIMEOUT: '10m' });
      let ended: { code: number | null; out: string } | undefined;
      void run.then((r) => (ended = r));
      await waitFor(
        async () =>
          ended ??
          (await rows(`SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND NOT granted`))
            .length,
        (x) => x !== 0,
        50_000,
      );
      expect(ended?.out).toBeUndefined(); // still waiting in 0002
      await mal.query(
        `CREATE FUNCTION public.lower(character varying) RETURNS text LANGUAGE sql AS $$SELECT 'x'$$`,
      );
      await holder.query('SELECT pg_catalog.pg_advisory_unlock(424242)');
      const r = await run;
      expect(r.code, r.out).toBe(EXIT.DATAERR);
      expect(r.out).toContain(`${attacker} owns objects in public`);
      expect(r.out).toContain('Migration 0002_slow.sql was rolled back: nothing of it was applied');
      expect(r.out).toMatch(/pg_terminate_backend/);
      expect(await rows(`SELECT version FROM public.pgmaintd_migrations ORDER BY 1`)).toEqual([
        { version: 1 },
      ]);
    } finally {
      await Promise.all([mal.end(), holder.end()]);
    }
  });
});

describe("a schema named like pg-maintd's role", () => {
  it('never receives the application: the migrations build in public, and every backup holds them', async () => {
    await owned.admin(`CREATE SCHEMA ${owned.role} AUTHORIZATION ${owned.role}`);
    const dir = tempDir('pgmaintd-hostile-');
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
