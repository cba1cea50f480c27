// The PITR heartbeat writer on a real PostgreSQL 15, as a role that is not a superuser: it numbers its
// rows and marks them as its own (seq_at = at), gains the numbers on a table made before them, keeps
// numbering in commit order when two writers race, and still beats, unnumbered and said once, on a
// table a superuser owns that it may write but not alter.
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DbPool } from '../../src/db/pool.js';
import { createLogger } from '../../src/log/logger.js';
import { Heartbeat } from '../../src/pitr/heartbeat.js';
import { waitFor } from '../support/daemon.js';
import { createOwnedDatabase, type OwnedDatabase } from '../support/postgres.js';

let db: OwnedDatabase;
const pools: DbPool[] = [];

beforeAll(async () => {
  db = await createOwnedDatabase('hb');
  await db.admin(`CREATE SCHEMA pgmaintd AUTHORIZATION ${db.role}`);
});

afterAll(async () => {
  await Promise.allSettled(pools.map((p) => p.stop()));
  await db?.drop();
});

function writer(logs?: string[]): Heartbeat {
  const pool = new DbPool(
    {
      url: db.url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 10_000 },
    },
    { name: 'heartbeat-test', logger: createLogger({ level: 'silent', format: 'json' }) },
  );
  pools.push(pool);
  const destination = new Writable({
    write(chunk, _enc, cb) {
      logs?.push(String(chunk));
      cb();
    },
  });
  return new Heartbeat({
    pool,
    intervalMs: 1000,
    logger: createLogger({ level: 'info', format: 'json', destination }),
  });
}

async function row(): Promise<{ seq: string | null; proven: boolean | null; columns: string[] }> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    const r = await c.query<{ j: Record<string, unknown> }>(
      'SELECT to_jsonb(h) AS j FROM pgmaintd.pitr_heartbeat h',
    );
    const j = r.rows[0]!.j;
    return {
      seq: j.seq === undefined ? null : String(j.seq),
      proven: j.seq_at === undefined ? null : j.seq_at === j.at,
      columns: Object.keys(j).sort(),
    };
  } finally {
    await c.end();
  }
}

describe('PITR heartbeat', () => {
  it('numbers a table made before the numbers, and marks each row it writes as its own', async () => {
    await db.admin(
      `SET ROLE ${db.role}; CREATE TABLE pgmaintd.pitr_heartbeat(id int PRIMARY KEY, at timestamptz NOT NULL)`,
    );
    await db.admin('INSERT INTO pgmaintd.pitr_heartbeat VALUES (1, clock_timestamp())');
    const hb = writer();
    await hb.beat();
    expect(await row()).toEqual({ seq: '1', proven: true, columns: ['at', 'id', 'seq', 'seq_at'] });
    await hb.beat();
    expect(await row()).toMatchObject({ seq: '2', proven: true });
    // an update that is not the writer's (an older pg-maintd, a DBA) leaves a row no drill counts on
    await db.admin('UPDATE pgmaintd.pitr_heartbeat SET at = clock_timestamp()');
    expect(await row()).toMatchObject({ seq: '2', proven: false });
    await hb.beat();
    expect(await row()).toMatchObject({ seq: '3', proven: true });
  });

  it('numbers racing writers one after the other, each time read after the one before committed', async () => {
    const c = new pg.Client({ connectionString: db.url });
    const probe = new pg.Client({ connectionString: db.url });
    await c.connect();
    await probe.connect();
    try {
      // the row held locked: both writers wait on it, then take their turns
      await c.query('BEGIN');
      await c.query('SELECT * FROM pgmaintd.pitr_heartbeat FOR UPDATE');
      const a = writer();
      const b = writer();
      const racing = Promise.all([a.beat(), b.beat()]);
      await waitFor(
        async () =>
          // pg_stat_activity is read once per transaction: the held one would see it as it began
          (
            await probe.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'`,
            )
          ).rows[0]!.n,
        (n) => n === 2,
        30_000,
        50,
      );
      const held = (await c.query<{ t: string }>('SELECT clock_timestamp()::text AS t')).rows[0]!.t;
      await c.query('COMMIT');
      const [ta, tb] = await racing;
      expect(Math.min(ta, tb)).toBeGreaterThan(
        Date.parse(held.replace(' ', 'T').replace(/\+00$/, 'Z')) / 1000,
      );
      expect(await row()).toMatchObject({ seq: '5', proven: true });
    } finally {
      await c.end();
      await probe.end();
    }
  });

  it("beats without numbers on a superuser's table it may write but not alter, and says so once", async () => {
    await db.admin('DROP TABLE pgmaintd.pitr_heartbeat');
    await db.admin('CREATE TABLE pgmaintd.pitr_heartbeat(id int PRIMARY KEY, at timestamptz NOT NULL)');
    await db.admin(`GRANT SELECT, INSERT, UPDATE ON pgmaintd.pitr_heartbeat TO ${db.role}`);
    const logs: string[] = [];
    const hb = writer(logs);
    const first = await hb.beat();
    const second = await hb.beat();
    expect(second).toBeGreaterThan(first);
    expect(await row()).toEqual({ seq: null, proven: null, columns: ['at', 'id'] });
    const said = logs.filter((l) => l.includes('PITR heartbeats are written without numbers'));
    expect(said).toHaveLength(1);
    expect(said[0]).toContain('must be owner');
  });
});
