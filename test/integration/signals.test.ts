// The signals SREs page on, each moved for real on a real server and read back from the registry as
// a scrape would: transaction IDs consumed, bloat made by updates with autovacuum off, invalid indexes
// left by failed concurrent builds, a lock wait sampled. Each test also reports its collector's poll
// cost (pg_scrape_collector_duration_seconds) against the statement_timeout the poller sets.
import pg from 'pg';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import type { Collector } from '../../src/metrics/collector.js';
import { BloatCollector } from '../../src/metrics/collectors/bloat.js';
import { InvalidIndexesCollector } from '../../src/metrics/collectors/invalid-indexes.js';
import { WaitEventsCollector } from '../../src/metrics/collectors/wait-events.js';
import { WraparoundCollector } from '../../src/metrics/collectors/wraparound.js';
import { Poller } from '../../src/metrics/poller.js';
import { metricValue } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { useTestDatabase } from '../support/postgres.js';

const db = useTestDatabase();
const STATEMENT_TIMEOUT_MS = 5000;

function poller(make: (r: Registry) => Collector[]) {
  const registry = new Registry();
  const p = new Poller({
    db: {
      url: db.url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
    },
    registry,
    logger: createLogger({ level: 'silent', format: 'json' }),
    collectors: make(registry),
    intervalMs: 60_000,
    statementTimeoutMs: STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: 1000,
  });
  return { registry, p };
}

/** Polls once and checks the collector succeeded within its statement_timeout. */
async function pollOk(registry: Registry, p: Poller, collector: string): Promise<number> {
  await p.pollAll();
  expect(await metricValue(registry, 'pg_scrape_collector_success', { collector }), collector).toBe(1);
  const seconds = (await metricValue(registry, 'pg_scrape_collector_duration_seconds', { collector }))!;
  expect(seconds).toBeLessThan(STATEMENT_TIMEOUT_MS / 1000);
  return seconds;
}

async function inSession(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: db.url, application_name: 'signals-test' });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

describe('database_wraparound collector', () => {
  it('sees transaction IDs and multixacts consumed: pg_txid_current and the ages of datfrozenxid and datminmxid grow, the distances to their freeze_max_age shrink', async () => {
    const { registry, p } = poller((r) => [new WraparoundCollector(r)]);
    try {
      await pollOk(registry, p, 'database_wraparound');
      const value = (name: string, labels: Record<string, string> = {}) =>
        metricValue(registry, name, labels);
      const txid0 = (await value('pg_txid_current'))!;
      const age0 = (await value('pg_database_wraparound_age_datfrozenxid_seconds', { datname: db.name }))!;
      const dist0 = (await value('pgmaintd_wraparound_freeze_max_age_distance', {
        datname: db.name,
        kind: 'xid',
      }))!;
      expect(txid0).toBeGreaterThan(0);
      expect(age0).toBeGreaterThan(0);
      // 200000000 is autovacuum_freeze_max_age's default
      expect(dist0).toBe(200_000_000 - age0);
      expect(
        await value('pg_database_wraparound_age_datminmxid_seconds', { datname: 'template0' }),
      ).toBeGreaterThanOrEqual(0);
      expect(
        await value('pgmaintd_wraparound_freeze_max_age_distance', { datname: db.name, kind: 'multixact' }),
      ).toBeGreaterThan(0);

      // polling again consumes no transaction ID itself (nothing else runs in this cluster's test database)
      await inSession('DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$');
      const cost = await pollOk(registry, p, 'database_wraparound');
      const txid1 = (await value('pg_txid_current'))!;
      const age1 = (await value('pg_database_wraparound_age_datfrozenxid_seconds', { datname: db.name }))!;
      const dist1 = (await value('pgmaintd_wraparound_freeze_max_age_distance', {
        datname: db.name,
        kind: 'xid',
      }))!;
      expect(txid1 - txid0).toBeGreaterThanOrEqual(2000);
      expect(age1 - age0).toBeGreaterThanOrEqual(2000);
      expect(dist0 - dist1).toBe(age1 - age0);
      // multixacts: two sessions share-locking the same row make one, each time
      await inSession('CREATE TABLE shared_row (id int PRIMARY KEY); INSERT INTO shared_row VALUES (1)');
      const mxid0 = (await value('pg_database_wraparound_age_datminmxid_seconds', { datname: db.name }))!;
      const [a, b] = [
        new pg.Client({ connectionString: db.url }),
        new pg.Client({ connectionString: db.url }),
      ];
      await a.connect();
      await b.connect();
      try {
        for (let i = 0; i < 20; i++) {
          for (const c of [a, b]) await c.query('BEGIN; SELECT * FROM shared_row WHERE id = 1 FOR SHARE');
          for (const c of [a, b]) await c.query('COMMIT');
        }
      } finally {
        await a.end();
        await b.end();
      }
      await pollOk(registry, p, 'database_wraparound');
      const mxid1 = (await value('pg_database_wraparound_age_datminmxid_seconds', { datname: db.name }))!;
      expect(mxid1 - mxid0).toBeGreaterThanOrEqual(20);
      expect(
        await value('pgmaintd_wraparound_freeze_max_age_distance', { datname: db.name, kind: 'multixact' }),
      ).toBe(400_000_000 - mxid1); // autovacuum_multixact_freeze_max_age's default
      console.log(`database_wraparound: poll ${(cost * 1000).toFixed(1)} ms`);
    } finally {
      await p.stop();
    }
  });
});

describe('bloat collector', () => {
  it('sees the table and btree estimates rise when every row is updated with autovacuum off', async () => {
    await inSession(`
      CREATE TABLE bloated (id int PRIMARY KEY, k int, pad text) WITH (autovacuum_enabled = off);
      INSERT INTO bloated SELECT g, g, repeat('x', 60) FROM generate_series(1, 20000) g;
      CREATE INDEX bloated_k ON bloated (k);
      ANALYZE bloated`);
    const { registry, p } = poller((r) => [new BloatCollector(r, { limit: 100 })]);
    try {
      await pollOk(registry, p, 'bloat');
      const table = { datname: db.name, schemaname: 'public', relname: 'bloated' };
      const index = { ...table, idxname: 'bloated_k' };
      const tablePct0 = (await metricValue(registry, 'pg_bloat_table_bloat_pct', table))!;
      const btreePct0 = (await metricValue(registry, 'pg_bloat_btree_bloat_pct', index))!;
      const size0 = (await metricValue(registry, 'pg_bloat_table_real_size', table))!;
      expect(tablePct0).toBeLessThan(20);
      expect(btreePct0).toBeLessThan(30);
      expect(await metricValue(registry, 'pg_bloat_btree_real_size', index)).toBeGreaterThan(0);
      expect(
        await metricValue(registry, 'pg_bloat_btree_bloat_pct', { ...table, idxname: 'bloated_pkey' }),
      ).toBeDefined();

      // every row updated (the indexed column, so no HOT) twice: two dead versions per live row
      await inSession('UPDATE bloated SET k = k + 100000');
      await inSession('UPDATE bloated SET k = k + 100000');
      await inSession('ANALYZE bloated');
      const cost = await pollOk(registry, p, 'bloat');
      const tablePct1 = (await metricValue(registry, 'pg_bloat_table_bloat_pct', table))!;
      const btreePct1 = (await metricValue(registry, 'pg_bloat_btree_bloat_pct', index))!;
      expect(tablePct1).toBeGreaterThan(50);
      expect(btreePct1).toBeGreaterThan(btreePct0 + 30);
      expect(await metricValue(registry, 'pg_bloat_table_real_size', table)).toBeGreaterThan(2 * size0);
      const text = await registry.metrics();
      expect(text).toMatch(/# HELP pg_bloat_table_bloat_pct .*estimate/);
      expect(text).toMatch(/# HELP pg_bloat_btree_bloat_pct .*estimate/);
      console.log(`bloat: poll ${(cost * 1000).toFixed(1)} ms`);

      // VACUUM FULL gives the space back, and the estimate says so
      await inSession('VACUUM FULL ANALYZE bloated');
      await pollOk(registry, p, 'bloat');
      expect(await metricValue(registry, 'pg_bloat_table_bloat_pct', table)).toBeLessThan(20);
    } finally {
      await p.stop();
    }
  });
});

describe('invalid_indexes collector', () => {
  it('lists the index a failed CREATE INDEX CONCURRENTLY leaves and the _ccnew of a failed REINDEX CONCURRENTLY, until they are dropped', async () => {
    await inSession('CREATE TABLE dup (x int); INSERT INTO dup VALUES (1), (1)');
    const { registry, p } = poller((r) => [new InvalidIndexesCollector(r)]);
    try {
      await pollOk(registry, p, 'invalid_indexes');
      expect(
        await metricValue(registry, 'pg_general_index_info_pg_relation_size', { relname: 'dup' }),
      ).toBeUndefined();

      await expect(inSession('CREATE UNIQUE INDEX CONCURRENTLY dup_x ON dup (x)')).rejects.toMatchObject({
        code: '23505',
      });
      await expect(inSession('REINDEX INDEX CONCURRENTLY dup_x')).rejects.toMatchObject({ code: '23505' });
      const cost = await pollOk(registry, p, 'invalid_indexes');
      const labels = { datname: db.name, schemaname: 'public', relname: 'dup' };
      expect(
        await metricValue(registry, 'pg_general_index_info_pg_relation_size', {
          ...labels,
          indexrelname: 'dup_x',
        }),
      ).toBeGreaterThanOrEqual(0);
      expect(
        await metricValue(registry, 'pgmaintd_invalid_index_info', {
          ...labels,
          indexrelname: 'dup_x',
          leftover: 'false',
        }),
      ).toBe(1);
      // the name awesome-prometheus-alerts' "Postgresql invalid index" rule selects
      const text = await registry.metrics();
      expect(text).toMatch(
        new RegExp(
          `^pg_general_index_info_pg_relation_size\\{datname="${db.name}",schemaname="public",relname="dup",indexrelname="dup_x_ccnew"\\} \\d+$`,
          'm',
        ),
      );
      expect(
        await metricValue(registry, 'pgmaintd_invalid_index_info', {
          indexrelname: 'dup_x_ccnew',
          leftover: 'true',
          building: 'false',
        }),
      ).toBe(1);
      console.log(`invalid_indexes: poll ${(cost * 1000).toFixed(1)} ms`);

      await inSession('DROP INDEX dup_x_ccnew; DROP INDEX dup_x');
      await pollOk(registry, p, 'invalid_indexes');
      expect(
        await metricValue(registry, 'pg_general_index_info_pg_relation_size', { relname: 'dup' }),
      ).toBeUndefined();
      expect(await metricValue(registry, 'pgmaintd_invalid_index_info', { relname: 'dup' })).toBeUndefined();
    } finally {
      await p.stop();
    }
  });
  it('marks an index a running CREATE INDEX CONCURRENTLY is building (invalid until it ends), and drops it once valid', async () => {
    await inSession(
      'CREATE TABLE building (x int); INSERT INTO building SELECT g FROM generate_series(1, 100) g',
    );
    const { registry, p } = poller((r) => [new InvalidIndexesCollector(r)]);
    // an open writing transaction makes CREATE INDEX CONCURRENTLY wait, its index invalid meanwhile
    const writer = new pg.Client({ connectionString: db.url });
    const builder = new pg.Client({ connectionString: db.url });
    await writer.connect();
    await builder.connect();
    await writer.query('BEGIN');
    await writer.query('INSERT INTO building VALUES (0)');
    const building = builder.query('CREATE INDEX CONCURRENTLY building_x ON building (x)');
    const info = { relname: 'building', indexrelname: 'building_x', leftover: 'false' };
    try {
      const seen = await waitFor(
        async () => {
          await pollOk(registry, p, 'invalid_indexes');
          return metricValue(registry, 'pgmaintd_invalid_index_info', { ...info, building: 'true' });
        },
        (v) => v === 1,
        15_000,
        100,
      );
      expect(seen).toBe(1);
    } finally {
      await writer.query('ROLLBACK');
      await writer.end();
      await building;
      await builder.end();
    }
    await pollOk(registry, p, 'invalid_indexes');
    expect(
      await metricValue(registry, 'pgmaintd_invalid_index_info', { relname: 'building' }),
    ).toBeUndefined();
    await p.stop();
  });
});

describe('wait_events collector', () => {
  it('samples a lock wait several times per interval, then lets it go once the window has passed', async () => {
    await inSession('CREATE TABLE waited_on (id int)');
    const windowMs = 2000;
    const collector = (r: Registry) => new WaitEventsCollector(r, { windowMs });
    const { registry, p } = poller((r) => [collector(r)]);
    expect(collector(new Registry()).intervalMs).toBe(1000); // a fifth of the window, at least 1 s
    const holder = new pg.Client({ connectionString: db.url });
    const waiter = new pg.Client({ connectionString: db.url });
    await holder.connect();
    await waiter.connect();
    const lock = { wait_event_type: 'Lock', wait_event: 'relation' };
    try {
      await holder.query('BEGIN; LOCK TABLE waited_on IN ACCESS EXCLUSIVE MODE');
      const waiterPid = (await waiter.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const waiting = waiter.query('SELECT count(*) FROM waited_on').catch(() => undefined);
      await waitFor(
        async () =>
          (
            await holder.query<{ b: boolean }>('SELECT cardinality(pg_blocking_pids($1)) > 0 AS b', [
              waiterPid,
            ])
          ).rows[0]!.b,
        (b) => b,
        10_000,
        20,
      );
      const cost = await pollOk(registry, p, 'wait_events');
      expect(await metricValue(registry, 'pgmaintd_wait_event_sessions', lock)).toBe(1);
      expect(await metricValue(registry, 'pgmaintd_wait_event_sessions_max', lock)).toBe(1);
      // pg-maintd's own session is not counted, nor idle sessions (the holder waits on ClientRead, idle in transaction)
      expect(
        await metricValue(registry, 'pgmaintd_wait_event_sessions', { wait_event: 'ClientRead' }),
      ).toBeUndefined();
      console.log(`wait_events: poll ${(cost * 1000).toFixed(1)} ms`);

      await holder.query('ROLLBACK');
      await waiting;
      // the next sample no longer sees it: the average over the window drops below 1...
      await pollOk(registry, p, 'wait_events');
      const avg = (await metricValue(registry, 'pgmaintd_wait_event_sessions', lock))!;
      expect(avg).toBeGreaterThan(0);
      expect(avg).toBeLessThan(1);
      expect(await metricValue(registry, 'pgmaintd_wait_event_sessions_max', lock)).toBe(1);
      // ...and once the window has passed without it, the series goes
      await waitFor(
        async () => {
          await pollOk(registry, p, 'wait_events');
          return metricValue(registry, 'pgmaintd_wait_event_sessions', lock);
        },
        (v) => v === undefined,
        20_000,
        200,
      );
    } finally {
      await holder.end();
      await waiter.end();
      await p.stop();
    }
  });
});
