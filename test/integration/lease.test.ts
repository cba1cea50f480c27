// Leader leases against a real server: one leader among contenders, renewal and loss (a row deleted
// or taken over, a renewal that cannot get through), void and expired rows, and a lease table that
// another role could write or squat (never trusted, never written, the fix named). A second,
// non-superuser LOGIN role plays the attacker.
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DbPool } from '../../src/db/pool.js';
import { LeaseLostError } from '../../src/db/lease.js';
import { createLogger } from '../../src/log/logger.js';
import { asLeader, type LeaderResult } from '../../src/db/leader.js';
import { waitFor } from '../support/daemon.js';
import {
  adminUrl,
  createTestDatabase,
  startPrivateCluster,
  useTestDatabase,
  withDatabase,
} from '../support/postgres.js';

const db = useTestDatabase();
const quiet = createLogger({ level: 'silent', format: 'json' });
const suffix = Math.random().toString(16).slice(2, 8);
const attacker = `lease_attacker_${suffix}`;
const owner = `lease_owner_${suffix}`;
const PASSWORD = `pw-${suffix}`;

function poolOn(url: string, name = 'lease-test'): DbPool {
  return new DbPool(
    {
      url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 3, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 },
    },
    { name, logger: quiet },
  );
}

function asRole(url: string, role: string): string {
  const u = new URL(url);
  u.username = role;
  u.password = PASSWORD;
  return u.toString();
}

async function admin(sql: string, database?: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: database ? withDatabase(adminUrl(), database) : adminUrl() });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A log that keeps its JSON lines. */
function capturingLogger() {
  const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { lines, logger: createLogger({ level: 'info', format: 'json', destination }) };
}

const opts = (ttlMs = 3000) => ({ ttlMs, logger: quiet });

beforeAll(async () => {
  await admin(`CREATE ROLE ${attacker} LOGIN PASSWORD '${PASSWORD}'`);
  await admin(`CREATE ROLE ${owner} LOGIN PASSWORD '${PASSWORD}'`);
});
afterAll(async () => {
  for (const r of [attacker, owner]) await admin(`DROP ROLE IF EXISTS ${r}`).catch(() => undefined);
});

describe('leader leases', () => {
  it('exactly one of several contenders runs; the others see the holder; the lease is free again afterwards', async () => {
    const pools = [0, 1, 2].map(() => poolOn(db.url));
    try {
      let running = 0;
      // The leader holds the lease until every other contender has had its answer: on a slow machine
      // one could otherwise ask only after a fixed hold had ended, and lead in turn.
      let othersAnswered!: () => void;
      const others = new Promise<void>((resolve) => (othersAnswered = resolve));
      let answered = 0;
      const results = await Promise.all(
        pools.map((p) =>
          asLeader(p, 'backup:app', opts(), async () => {
            running++;
            if (running > 1) othersAnswered(); // a second leader: the checks below say so
            await others;
            return 'done';
          }).finally(() => {
            if (++answered === pools.length - 1) othersAnswered();
          }),
        ),
      );
      expect(results.filter((r) => r.led)).toHaveLength(1);
      expect(running).toBe(1);
      for (const r of results.filter((x) => !x.led))
        expect(r).toMatchObject({
          reason: 'not_leader',
          holder: { holder: expect.stringMatching(/ pid \d+$/) },
        });
      const after = await asLeader(pools[1]!, 'backup:app', opts(), async () => 'again');
      expect(after).toEqual({ led: true, value: 'again' });
      // a different job name is a different lease
      const [a, b] = await Promise.all([
        asLeader(pools[0]!, 'backup:app', opts(), () => new Promise((r) => setTimeout(() => r(1), 100))),
        asLeader(pools[1]!, 'verify:app', opts(), async () => 2),
      ]);
      expect(a.led && b.led).toBe(true);
      // released, not left to expire: the rows stay (with the slot last done), expired and tokenless
      const rows = await db.pool.query(
        "SELECT count(*) FILTER (WHERE expires_at > clock_timestamp() OR token <> '')::int AS n FROM pgmaintd.leases",
      );
      expect(rows.rows[0]).toEqual({ n: 0 });
    } finally {
      for (const p of pools) await p.stop();
    }
  });

  it('no other role can write the lease table or its schema', async () => {
    const p = poolOn(db.url);
    try {
      // a lease is held while the attacker tries
      await asLeader(p, 'backup:held', opts(), async () => {
        const c = new pg.Client({ connectionString: asRole(db.url, attacker) });
        await c.connect();
        try {
          for (const sql of [
            "INSERT INTO pgmaintd.leases VALUES ('backup:app', 'me', 't', now(), now() + interval '1 year')",
            "UPDATE pgmaintd.leases SET expires_at = now() + interval '1 year'",
            'DELETE FROM pgmaintd.leases',
            'TRUNCATE pgmaintd.leases',
            'SELECT * FROM pgmaintd.leases',
            'CREATE TABLE pgmaintd.squat (id int)',
            'DROP TABLE pgmaintd.leases',
            'ALTER TABLE pgmaintd.leases ADD COLUMN x int',
          ]) {
            const err = await c.query(sql).then(
              () => undefined,
              (e: unknown) => e as { code?: string },
            );
            expect(err?.code, sql).toMatch(/^42501$/); // insufficient_privilege
          }
        } finally {
          await c.end();
        }
      });
      const owners = await db.pool.query<{ schema: string; tbl: string }>(
        `SELECT pg_get_userbyid(n.nspowner) AS schema, pg_get_userbyid(c.relowner) AS tbl
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgmaintd' AND c.relname = 'leases'`,
      );
      expect(owners.rows[0]).toEqual({ schema: 'postgres', tbl: 'postgres' });
    } finally {
      await p.stop();
    }
  });

  it.each([
    ['deleted', 'DELETE FROM pgmaintd.leases WHERE name = $1'],
    ['taken over', "UPDATE pgmaintd.leases SET token = 'someone-else' WHERE name = $1"],
  ])(
    'a lease %s mid-run aborts the work with a LeaseLostError within a renewal period',
    async (_how, sql) => {
      const p = poolOn(db.url);
      const name = `backup:stolen-${_how.replace(' ', '-')}`;
      try {
        let reason: unknown;
        const r = await asLeader(p, name, opts(3000), async (signal) => {
          await db.pool.query(sql, [name]);
          await new Promise<void>((resolve) =>
            signal.addEventListener('abort', () => resolve(), { once: true }),
          );
          reason = signal.reason;
        });
        expect(r.led).toBe(true);
        expect(reason).toBeInstanceOf(LeaseLostError);
        // noticed by a renewal (every TTL/3), not by the deadline
        expect((reason as Error).message).toMatch(/taken over, deleted or had expired/);
        // nothing of ours is left; a taken-over row is not deleted by us
        const left = await db.pool.query('SELECT token FROM pgmaintd.leases WHERE name = $1', [name]);
        expect(left.rows).toEqual(_how === 'deleted' ? [] : [{ token: 'someone-else' }]);
      } finally {
        await db.pool.query('DELETE FROM pgmaintd.leases WHERE name = $1', [name]);
        await p.stop();
      }
    },
  );

  it('a renewal that cannot get through loses the lease at the local deadline; another may take it once it expired', async () => {
    const p = poolOn(db.url);
    const other = poolOn(db.url);
    const name = 'backup:unrenewable';
    const blocker = new pg.Client({ connectionString: db.url });
    await blocker.connect();
    try {
      let reason: unknown;
      const r = await asLeader(p, name, opts(2000), async (signal) => {
        // the row locked: every renewal waits, as if the database did not answer
        await blocker.query('BEGIN');
        await blocker.query('SELECT * FROM pgmaintd.leases WHERE name = $1 FOR UPDATE', [name]);
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        reason = signal.reason;
      });
      expect(r.led).toBe(true);
      // lost on the local clock while the renewal still waited: no answer was needed to notice
      expect(reason).toBeInstanceOf(LeaseLostError);
      expect((reason as Error).message).toMatch(/not renewed within LEASE_TTL \(2000 ms\)/);
      await blocker.query('ROLLBACK');
      // the row expires on the database's clock: then another contender takes it
      const taken = await waitFor(
        () => asLeader(other, name, opts(), async () => 'mine'),
        (x: LeaderResult<string>) => x.led,
        10_000,
        200,
      );
      expect(taken).toEqual({ led: true, value: 'mine' });
    } finally {
      await blocker.end();
      await p.stop();
      await other.stop();
    }
  });

  it('an expired lease is taken over; a void one (expiring later than any LEASE_TTL allows) too, with a warning', async () => {
    const p = poolOn(db.url);
    const { lines, logger } = capturingLogger();
    try {
      await db.pool.query(`INSERT INTO pgmaintd.leases VALUES
        ('backup:expired', 'gone-host pid 1', 'x', now() - interval '1 hour', now() - interval '1 second'),
        ('backup:void', 'bad-host pid 2', 'y', now(), now() + interval '10 years')`);
      expect((await asLeader(p, 'backup:expired', { ttlMs: 3000, logger }, async () => 1)).led).toBe(true);
      expect(lines.filter((l) => l.level >= 40)).toEqual([]);
      expect((await asLeader(p, 'backup:void', { ttlMs: 3000, logger }, async () => 2)).led).toBe(true);
      expect(lines.find((l) => l.level === 40)).toMatchObject({
        lease: 'backup:void',
        previousHolder: 'bad-host pid 2',
        msg: expect.stringMatching(/^took over a lease whose expiry lay further ahead/),
      });
      // a lease held for the full hour is not void
      await db.pool.query(
        `INSERT INTO pgmaintd.leases VALUES ('backup:long', 'long-host pid 3', 'z', now(), now() + interval '59 minutes')`,
      );
      expect(await asLeader(p, 'backup:long', opts(), async () => 3)).toMatchObject({
        led: false,
        reason: 'not_leader',
        holder: { holder: 'long-host pid 3' },
      });
    } finally {
      await db.pool.query("DELETE FROM pgmaintd.leases WHERE name LIKE 'backup:%'");
      await p.stop();
    }
  });
});

describe('a lease table another role could write is never trusted', () => {
  /** A fresh database, `arrange` run in it as the admin, then a lease attempt by `role` (default: the admin). */
  async function attempt(arrange: string, role?: string) {
    const d = await createTestDatabase('t_lease_unsafe');
    try {
      if (arrange) await admin(arrange.replaceAll('$DB', d.name), d.name);
      const p = poolOn(role ? asRole(d.url, role) : d.url);
      let ran = false;
      try {
        const r = await asLeader(p, 'backup:app', opts(), async () => (ran = true));
        return { r, ran, d };
      } finally {
        await p.stop();
      }
    } catch (err) {
      await d.drop();
      throw err;
    }
  }

  /** Runs the SQL the fix names (as a DBA would), then the lease must work. */
  async function applyFix(d: { name: string }, fix: string, role?: string) {
    const sql = /runs(?:, in the database of DATABASE_URL)?: (.*?;)(?: \(|$)/.exec(fix)?.[1];
    expect(sql, fix).toBeDefined();
    await admin(sql!, d.name);
    const p = poolOn(
      role ? asRole(withDatabase(adminUrl(), d.name), role) : withDatabase(adminUrl(), d.name),
    );
    try {
      expect(await asLeader(p, 'backup:app', opts(), async () => 'ok')).toEqual({ led: true, value: 'ok' });
    } finally {
      await p.stop();
    }
  }

  it.each([
    [
      'the schema squatted by another role (with its own leases table, open to all)',
      `GRANT CREATE ON DATABASE $DB TO ${attacker};
       SET ROLE ${attacker};
       CREATE SCHEMA pgmaintd;
       CREATE TABLE pgmaintd.leases (name text PRIMARY KEY, holder text, token text, acquired_at timestamptz, expires_at timestamptz);
       GRANT USAGE ON SCHEMA pgmaintd TO PUBLIC;
       GRANT ALL ON pgmaintd.leases TO PUBLIC;
       RESET ROLE`,
      new RegExp(`schema pgmaintd is owned by ${attacker}, not by pg-maintd's role postgres or a superuser`),
      /DROP SCHEMA pgmaintd CASCADE; CREATE SCHEMA pgmaintd AUTHORIZATION postgres;/,
    ],
    [
      'CREATE on the schema granted to PUBLIC',
      'CREATE SCHEMA pgmaintd; GRANT CREATE ON SCHEMA pgmaintd TO PUBLIC',
      /other roles may create objects in the schema pgmaintd: PUBLIC/,
      /REVOKE CREATE ON SCHEMA pgmaintd FROM PUBLIC;/,
    ],
    [
      'INSERT on the table granted to another role',
      `CREATE SCHEMA pgmaintd; CREATE TABLE pgmaintd.leases (name text PRIMARY KEY, holder text NOT NULL, token text NOT NULL, acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
       GRANT USAGE ON SCHEMA pgmaintd TO ${attacker}; GRANT SELECT, INSERT ON pgmaintd.leases TO ${attacker}`,
      new RegExp(`other roles hold privileges to change pgmaintd.leases: ${attacker}`),
      new RegExp(`REVOKE ALL ON pgmaintd.leases FROM ${attacker};`),
    ],
    [
      'UPDATE of one column granted to another role',
      `CREATE SCHEMA pgmaintd; CREATE TABLE pgmaintd.leases (name text PRIMARY KEY, holder text NOT NULL, token text NOT NULL, acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
       GRANT USAGE ON SCHEMA pgmaintd TO ${attacker}; GRANT UPDATE (expires_at) ON pgmaintd.leases TO ${attacker}`,
      new RegExp(`other roles hold privileges to change pgmaintd.leases: ${attacker}`),
      undefined, // the column privilege needs its own REVOKE: covered by the hint's second part
    ],
    [
      'a view in the table’s place',
      `CREATE SCHEMA pgmaintd; CREATE VIEW pgmaintd.leases AS SELECT 'x'::text AS name`,
      /pgmaintd\.leases is not a table \(relkind v\)/,
      /DROP VIEW pgmaintd\.leases CASCADE;/,
    ],
  ])(
    '%s: the job is not run, nothing is written, the problem and the fix are named',
    async (_name, arrange, problem, fix) => {
      const { r, ran, d } = await attempt(arrange);
      try {
        expect(ran).toBe(false);
        expect(r).toMatchObject({ led: false, reason: 'lease_unusable' });
        const p = (r as Extract<LeaderResult<unknown>, { reason: 'lease_unusable' }>).problem;
        expect(p.problem).toMatch(problem);
        // one connection of its own, closed before the database is dropped
        const kind = await admin(
          `SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('pgmaintd.leases')) AS k`,
          d.name,
        );
        if (kind.rows[0]!.k === 'r') {
          const left = await admin('SELECT * FROM pgmaintd.leases', d.name);
          expect(left.rows).toEqual([]); // never written
        }
        if (fix) {
          expect(p.fix).toMatch(fix);
          await applyFix(d, p.fix);
        }
      } finally {
        await d.drop();
      }
    },
  );

  it('a role without CREATE on the database: the fix is the schema a DBA creates for it', async () => {
    const { r, ran, d } = await attempt(`REVOKE CREATE ON DATABASE $DB FROM PUBLIC`, owner);
    try {
      expect(ran).toBe(false);
      const p = (r as Extract<LeaderResult<unknown>, { reason: 'lease_unusable' }>).problem;
      expect(p.problem).toMatch(new RegExp(`the role ${owner} may not create the schema pgmaintd`));
      expect(p.fix).toBe(
        `a DBA runs, in the database of DATABASE_URL: CREATE SCHEMA pgmaintd AUTHORIZATION ${owner};`,
      );
      await applyFix(d, p.fix, owner);
    } finally {
      await d.drop();
    }
  });

  it('a trigger another role hung on the table while it held TRIGGER, revoked since: still not trusted', async () => {
    const tbl = `CREATE TABLE pgmaintd.leases (name text PRIMARY KEY, holder text NOT NULL, token text NOT NULL,
      acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, done_slot timestamptz)`;
    const { r, ran, d } = await attempt(
      `GRANT CREATE ON DATABASE $DB TO ${owner}, ${attacker};
       SET ROLE ${owner}; CREATE SCHEMA pgmaintd; ${tbl};
       GRANT USAGE ON SCHEMA pgmaintd TO ${attacker}; GRANT TRIGGER ON pgmaintd.leases TO ${attacker};
       SET ROLE ${attacker}; CREATE SCHEMA ${attacker};
       CREATE FUNCTION ${attacker}.f() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN RETURN NULL; END$f$;
       CREATE TRIGGER swallow BEFORE INSERT OR UPDATE ON pgmaintd.leases FOR EACH ROW EXECUTE FUNCTION ${attacker}.f();
       SET ROLE ${owner}; REVOKE TRIGGER ON pgmaintd.leases FROM ${attacker}; RESET ROLE`,
      owner,
    );
    try {
      expect(ran).toBe(false);
      const p = (r as Extract<LeaderResult<unknown>, { reason: 'lease_unusable' }>).problem;
      expect(p.problem).toBe(
        `pgmaintd.leases runs code of other roles: trigger swallow on pgmaintd.leases calls function ${attacker}.f() of ${attacker}`,
      );
      expect(p.fix).toMatch(/DROP TABLE pgmaintd\.leases CASCADE;/);
      await applyFix(d, p.fix, owner);
    } finally {
      await admin(`DROP OWNED BY ${attacker}`, d.name).catch(() => undefined);
      await d.drop();
    }
  });

  it('another role that is a member of pg-maintd’s role (it could act as it)', async () => {
    const { r, ran, d } = await attempt(
      `GRANT CREATE ON DATABASE $DB TO ${owner}; GRANT ${owner} TO ${attacker}`,
      owner,
    );
    try {
      expect(ran).toBe(false);
      const p = (r as Extract<LeaderResult<unknown>, { reason: 'lease_unusable' }>).problem;
      expect(p.problem).toMatch(
        new RegExp(`other roles are members of pg-maintd's role ${owner}.*: ${attacker}`),
      );
      await applyFix(d, p.fix, owner);
    } finally {
      await admin(`REVOKE ${owner} FROM ${attacker}`).catch(() => undefined);
      await d.drop();
    }
  });
});

describe('a role that inherits pg_write_all_data, or may SET ROLE to it (a cluster of its own: the grant is cluster-wide)', () => {
  it('is seen as able to change the lease table, though no grant on the table names it', async () => {
    const cluster = await startPrivateCluster();
    const pool = new DbPool(
      {
        url: cluster.url(),
        ssl: { mode: 'disable', rejectUnauthorized: false },
        pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 10_000 },
      },
      { name: 'lease-test', logger: quiet },
    );
    const c = new pg.Client({ connectionString: cluster.url() });
    await c.connect();
    try {
      // NOINHERIT: the privilege is not its own until it runs SET ROLE pg_write_all_data, which it
      // may do at any time; has_table_privilege('writer', ...) alone says false
      await c.query(`CREATE ROLE writer LOGIN; GRANT pg_write_all_data TO writer`);
      await c.query(`CREATE ROLE setter LOGIN NOINHERIT; GRANT pg_write_all_data TO setter`);
      const refused = async (who: RegExp) => {
        let ran = false;
        const r = await asLeader(pool, 'backup:app', opts(), async () => void (ran = true));
        expect(ran).toBe(false);
        expect(r).toMatchObject({ led: false, reason: 'lease_unusable' });
        const p = (r as Extract<LeaderResult<unknown>, { reason: 'lease_unusable' }>).problem;
        expect(p.problem).toMatch(who);
      };
      await refused(/other roles hold privileges to change pgmaintd\.leases: setter, writer/);
      await c.query('REVOKE pg_write_all_data FROM writer');
      await refused(/other roles hold privileges to change pgmaintd\.leases: setter$/);
      const noInherit = await c.query<{ can: boolean }>(
        `SELECT pg_catalog.has_table_privilege('setter', 'pgmaintd.leases', 'UPDATE') AS can`,
      );
      expect(noInherit.rows).toEqual([{ can: false }]); // what a check by privilege alone would see
      await c.query('REVOKE pg_write_all_data FROM setter');
      expect(await asLeader(pool, 'backup:app', opts(), async () => 'ok')).toEqual({
        led: true,
        value: 'ok',
      });
    } finally {
      await c.end();
      await pool.stop();
      await cluster.stop();
    }
  });
});
