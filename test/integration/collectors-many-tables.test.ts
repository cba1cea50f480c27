// The per-relation collectors on a database with thousands of tables, as the monitoring role: they
// report the largest tables and indexes (by the planner's estimate, which ANALYZE keeps current),
// with their exact sizes, the table statistics and their I/O on the same tables, and skip what
// someone holds exclusively (the table, or only one of its indexes) instead of waiting for it.
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { BloatCollector } from '../../src/metrics/collectors/bloat.js';
import { StatUserIndexesCollector } from '../../src/metrics/collectors/stat-user-indexes.js';
import { StatioTablesCollector } from '../../src/metrics/collectors/statio-tables.js';
import { TablesCollector } from '../../src/metrics/collectors/tables.js';
import { Poller } from '../../src/metrics/poller.js';
import { waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';

const TABLES = 4000;
const N = 5;
/** Tables made larger than the rest, each clearly larger than the next: rows each, spread among the empty ones. */
const LARGE: Array<[name: string, rows: number]> = [
  ['t100', 40_000],
  ['t3300', 30_000],
  ['t1700', 20_000],
  ['t900', 10_000],
  ['t2500', 5000],
  ['t3900', 2000],
];
const COLLECTORS = ['stat_user_tables', 'statio_user_tables', 'stat_user_indexes', 'bloat'];

let cluster: LocalCluster;
let admin: pg.Client;
let monitorUrl: string;

beforeAll(async () => {
  cluster = await startPrivateCluster();
  admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query(`CREATE ROLE monitor LOGIN PASSWORD 'monitor-pw' IN ROLE pg_monitor`);
  monitorUrl = cluster.url('postgres', 'monitor', 'monitor-pw');
  // in batches of 500 in a transaction each, as a migration would
  for (let b = 0; b < TABLES; b += 500) {
    const creates = Array.from(
      { length: 500 },
      (_, i) => `CREATE TABLE t${b + i} (id int PRIMARY KEY, doc text);`,
    );
    await admin.query(`BEGIN; ${creates.join('\n')} COMMIT`);
  }
  // no autovacuum on the tables with rows: their sizes (a VACUUM adds free-space and visibility maps)
  // stay what the test computes; ANALYZE gives the planner their sizes, indexes included
  for (const [name, rows] of LARGE) {
    await admin.query(`ALTER TABLE ${name} SET (autovacuum_enabled = false);
      INSERT INTO ${name} SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g;
      ANALYZE ${name}`);
  }
  // the largest of all by far, but never analyzed: the planner still thinks it empty
  await admin.query(`CREATE TABLE unseen (id int PRIMARY KEY, doc text) WITH (autovacuum_enabled = false);
    INSERT INTO unseen SELECT g, md5(g::text) FROM generate_series(1, 100000) g`);
  // the bloat estimate reads pg_stats, which shows a role the columns it may read
  await admin.query('GRANT SELECT ON ALL TABLES IN SCHEMA public TO monitor');
  // a session's statistics reach the views when it flushes them (at most once a second, later on a
  // busy machine): the polls must not run before the rows count
  await waitFor(
    () =>
      admin.query<{ relname: string; n: string }>(
        'SELECT relname, n_live_tup AS n FROM pg_stat_user_tables WHERE relname = ANY ($1::text[])',
        [LARGE.map(([name]) => name)],
      ),
    (r) => LARGE.every(([name, rows]) => r.rows.some((x) => x.relname === name && Number(x.n) === rows)),
    60_000,
    200,
  );
}, 180_000);

afterAll(async () => {
  await admin?.end();
  await cluster?.stop();
});

function poller() {
  const registry = new Registry();
  const p = new Poller({
    db: {
      url: monitorUrl,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 10_000 },
    },
    registry,
    logger: createLogger({ level: 'silent', format: 'json' }),
    collectors: [
      new TablesCollector(registry, { limit: N }),
      new StatioTablesCollector(registry, { limit: N }),
      new StatUserIndexesCollector(registry, { limit: N }),
      new BloatCollector(registry, { limit: N }),
    ],
    intervalMs: 60_000,
    // the default METRICS_STATEMENT_TIMEOUT; a lock wait would fail the poll after 1 s
    statementTimeoutMs: 5000,
    lockTimeoutMs: 1000,
  });
  return { registry, p };
}

/** Every series of `name`: label `by` -> value. */
async function series(registry: Registry, name: string, by = 'relname'): Promise<Map<string, number>> {
  const m = registry.getSingleMetric(name);
  if (!m) return new Map();
  return new Map((await m.get()).values.map((v) => [String(v.labels[by]), v.value]));
}

/** Polls every collector; fails unless each succeeded (within the statement timeout, without waiting on a lock). */
async function pollAll(registry: Registry, p: Poller): Promise<void> {
  await p.pollAll();
  for (const collector of COLLECTORS) {
    const ok = (await series(registry, 'pg_scrape_collector_success', 'collector')).get(collector);
    expect(ok, collector).toBe(1);
  }
}

/** The truth, from the size functions themselves: the `n` largest tables (except `but`), largest first. */
async function largestTables(n: number, but: string[] = []): Promise<string[]> {
  const r = await admin.query<{ relname: string }>(
    `SELECT relname FROM pg_stat_user_tables WHERE relname <> ALL ($1::text[])
      ORDER BY pg_total_relation_size(relid) DESC LIMIT $2`,
    [but, n],
  );
  return r.rows.map((x) => x.relname);
}

async function largestIndexes(n: number, but: string[] = []): Promise<string[]> {
  const r = await admin.query<{ indexrelname: string }>(
    `SELECT indexrelname FROM pg_stat_user_indexes WHERE relname <> ALL ($1::text[])
      ORDER BY pg_relation_size(indexrelid) DESC LIMIT $2`,
    [but, n],
  );
  return r.rows.map((x) => x.indexrelname);
}

/** The exported sizes of the tables and indexes reported equal the size functions' now. */
async function expectExactSizes(registry: Registry): Promise<void> {
  const exact = await admin.query<{ relname: string; t: string; i: string }>(
    `SELECT relname, pg_table_size(relid) AS t, pg_indexes_size(relid) AS i FROM pg_stat_user_tables`,
  );
  const bytes = new Map(exact.rows.map((r) => [r.relname, [Number(r.t), Number(r.i)]]));
  const tableSizes = await series(registry, 'pg_stat_user_tables_table_size_bytes');
  const indexSizes = await series(registry, 'pg_stat_user_tables_index_size_bytes');
  for (const [relname, size] of tableSizes) {
    expect(size, relname).toBe(bytes.get(relname)![0]);
    expect(indexSizes.get(relname), relname).toBe(bytes.get(relname)![1]);
  }
  const idx = await admin.query<{ indexrelname: string; size: string }>(
    `SELECT indexrelname, pg_relation_size(indexrelid) AS size FROM pg_stat_user_indexes`,
  );
  const idxBytes = new Map(idx.rows.map((r) => [r.indexrelname, Number(r.size)]));
  for (const [name, size] of await series(registry, 'pg_index_size_bytes', 'indexrelname'))
    expect(size, name).toBe(idxBytes.get(name));
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

describe(`${TABLES} tables, METRICS_TABLES_LIMIT ${N}`, () => {
  it('reports the largest tables and indexes with their exact sizes, the same tables in every collector; a table never analyzed only once ANALYZE has seen it', async () => {
    const { registry, p } = poller();
    try {
      await pollAll(registry, p);
      // `unseen` is the largest, but its estimate is 0 pages until something analyzes it
      const expected = await largestTables(N, ['unseen']);
      expect(expected).toEqual(LARGE.slice(0, N).map(([name]) => name));
      const tables = await series(registry, 'pg_stat_user_tables_n_live_tup');
      expect(sorted(tables.keys())).toEqual(sorted(expected));
      expect(tables.get('t100')).toBe(40_000);
      // the same tables for their I/O (the two join) and for the bloat estimate
      expect(sorted((await series(registry, 'pg_statio_user_tables_heap_blocks_hit')).keys())).toEqual(
        sorted(expected),
      );
      expect(sorted((await series(registry, 'pg_bloat_table_real_size')).keys())).toEqual(sorted(expected));
      expect(sorted((await series(registry, 'pg_index_size_bytes', 'indexrelname')).keys())).toEqual(
        sorted(await largestIndexes(N, ['unseen'])),
      );
      await expectExactSizes(registry);

      await admin.query('ANALYZE unseen');
      await pollAll(registry, p);
      const now = await largestTables(N);
      expect(now[0]).toBe('unseen');
      expect(sorted((await series(registry, 'pg_stat_user_tables_n_live_tup')).keys())).toEqual(sorted(now));
      expect(sorted((await series(registry, 'pg_statio_user_tables_heap_blocks_hit')).keys())).toEqual(
        sorted(now),
      );
      expect(sorted((await series(registry, 'pg_index_size_bytes', 'indexrelname')).keys())).toEqual(
        sorted(await largestIndexes(N)),
      );
      await expectExactSizes(registry);
    } finally {
      await p.stop();
    }
  });

  it('skips a table held exclusively, or one of whose indexes is, and reports the next largest instead', async () => {
    await admin.query('ANALYZE unseen'); // as the test before leaves it, when run alone
    const { registry, p } = poller();
    const holder = new pg.Client({ connectionString: cluster.url() });
    await holder.connect();
    try {
      const [first, second] = await largestTables(2);
      // a migration holding the largest table
      await holder.query(`BEGIN; LOCK TABLE ${first} IN ACCESS EXCLUSIVE MODE`);
      await pollAll(registry, p);
      const without = await largestTables(N, [first!]);
      expect(sorted((await series(registry, 'pg_stat_user_tables_n_live_tup')).keys())).toEqual(
        sorted(without),
      );
      expect(sorted((await series(registry, 'pg_statio_user_tables_heap_blocks_hit')).keys())).toEqual(
        sorted(without),
      );
      expect(sorted((await series(registry, 'pg_index_size_bytes', 'indexrelname')).keys())).toEqual(
        sorted(await largestIndexes(N, [first!])),
      );
      await holder.query('ROLLBACK');

      // REINDEX holds the index, not the table, exclusively: the size of the table's indexes would wait for it
      await holder.query(`BEGIN; REINDEX INDEX ${second}_pkey`);
      const held = await admin.query<{ table: string | null; index: string | null }>(
        `SELECT (SELECT mode FROM pg_locks WHERE relation = $1::regclass) AS table,
                (SELECT mode FROM pg_locks WHERE relation = $2::regclass) AS index`,
        [second, `${second}_pkey`],
      );
      expect(held.rows[0]).toEqual({ table: 'ShareLock', index: 'AccessExclusiveLock' });
      await pollAll(registry, p);
      const tables = await series(registry, 'pg_stat_user_tables_n_live_tup');
      expect(sorted(tables.keys())).toEqual(sorted(await largestTables(N, [second!])));
      expect((await series(registry, 'pg_index_size_bytes', 'indexrelname')).has(`${second}_pkey`)).toBe(
        false,
      );
      await holder.query('ROLLBACK');

      // held no more: back on the next poll
      await pollAll(registry, p);
      expect(sorted((await series(registry, 'pg_stat_user_tables_n_live_tup')).keys())).toEqual(
        sorted(await largestTables(N)),
      );
    } finally {
      await holder.end();
      await p.stop();
    }
  });
});
