// Collectors against real conditions on a real server: each condition is created for real and the
// exported values are read back from the registry the way a scrape would.
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import type { Collector } from '../../src/metrics/collector.js';
import { ActivityCollector, STATES } from '../../src/metrics/collectors/activity.js';
import { defaultCollectors } from '../../src/metrics/collectors/index.js';
import { DatabaseCollector, StatDatabaseCollector } from '../../src/metrics/collectors/database.js';
import { LocksCollector } from '../../src/metrics/collectors/locks.js';
import { ReplicationCollector } from '../../src/metrics/collectors/replication.js';
import { SettingsCollector, settingMetric } from '../../src/metrics/collectors/settings.js';
import { StatementsCollector } from '../../src/metrics/collectors/statements.js';
import { TablesCollector } from '../../src/metrics/collectors/tables.js';
import { registerPoolMetrics } from '../../src/metrics/pool-metrics.js';
import { Poller } from '../../src/metrics/poller.js';
import { metricValue } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { adminUrl, startPrivateCluster, useTestDatabase, withDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();

function capture(level = 'info') {
  const stream = new PassThrough();
  const lines: Array<Record<string, unknown>> = [];
  stream.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n').filter(Boolean))
      lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return { logger: createLogger({ level, format: 'json', destination: stream }), lines };
}

function poller(
  make: (r: Registry) => Collector[],
  logger = createLogger({ level: 'silent', format: 'json' }),
  databases?: readonly string[] | '*',
) {
  const registry = new Registry();
  const p = new Poller({
    db: {
      url: db.url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
    },
    registry,
    logger,
    collectors: make(registry),
    intervalMs: 60_000,
    statementTimeoutMs: 5000,
    lockTimeoutMs: 1000,
    ...(databases ? { databases } : {}),
  });
  return { registry, p };
}

/** Runs `sql` in a session of its own that then ends: a backend flushes its statistics when it exits (an idle one waits up to 10 s). */
async function once(sql: string, url = db.url): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/**
 * Waits until session `pid` has waited on a lock for over `seconds`, as the locks collector measures
 * it (pg_locks.waitstart from PostgreSQL 14, read through to_jsonb so older servers fall back to the
 * session's state_change): a fixed sleep would not know whether the statement even reached the server.
 */
async function blockedFor(pid: number, seconds: number): Promise<void> {
  await waitFor(
    async () =>
      (
        await db.pool.query<{ s: number | null }>(
          `SELECT extract(epoch FROM clock_timestamp() - coalesce(
                    (SELECT min((to_jsonb(l) ->> 'waitstart')::timestamptz) FROM pg_locks l
                      WHERE l.pid = a.pid AND NOT l.granted), a.state_change))::float8 AS s
             FROM pg_stat_activity a
            WHERE a.pid = $1 AND cardinality(pg_blocking_pids(a.pid)) > 0`,
          [pid],
        )
      ).rows[0]?.s ?? null,
    (s) => s !== null && s > seconds,
    20_000,
    50,
  );
}

async function pidOf(c: pg.Client): Promise<number> {
  return ((await c.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number }).pid;
}

async function session(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: db.url, application_name: 'collector-test' });
  await c.connect();
  return c;
}

describe('locks collector', () => {
  it('counts locks by mode (zero-filled), and sees a real lock wait: blocked sessions, wait time, the culprit logged', async () => {
    await db.pool.query('CREATE TABLE IF NOT EXISTS locked_things (id int)');
    const { logger, lines } = capture();
    const { registry, p } = poller((r) => [new LocksCollector(r, { logWaitsOverSeconds: 1 })], logger);
    const holder = await session();
    const waiter = await session();
    try {
      await holder.query('BEGIN; LOCK TABLE locked_things IN ACCESS EXCLUSIVE MODE');
      const holderPid = await pidOf(holder);
      const waiterPid = await pidOf(waiter);
      const waiting = waiter.query('SELECT count(*) FROM locked_things').catch(() => undefined);
      await blockedFor(waiterPid, 1); // past logWaitsOverSeconds

      await p.pollAll();
      const labels = { datname: db.name };
      expect(await metricValue(registry, 'pg_scrape_collector_success', { collector: 'locks' })).toBe(1);
      expect(await metricValue(registry, 'pgmaintd_blocked_sessions', labels)).toBe(1);
      expect(await metricValue(registry, 'pgmaintd_lock_wait_max_seconds', labels)).toBeGreaterThanOrEqual(1);
      expect(
        await metricValue(registry, 'pg_locks_count', { ...labels, mode: 'accessexclusivelock' }),
      ).toBeGreaterThanOrEqual(1);
      expect(await metricValue(registry, 'pg_locks_count', { ...labels, mode: 'sireadlock' })).toBe(0); // zero-filled
      const text = await registry.metrics();
      expect(
        text.match(new RegExp(`^pg_locks_count\\{datname="${db.name}",mode="[a-z]+"\\} \\d+$`, 'gm')),
      ).toHaveLength(9);

      const logged = lines.filter((l) => l.msg === 'session blocked on a lock');
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatchObject({
        datname: db.name,
        blocked: {
          pid: waiterPid,
          application: 'collector-test',
          query: 'SELECT count(*) FROM locked_things',
        },
        blocking: { pid: holderPid, application: 'collector-test', state: 'idle in transaction' },
      });
      await p.pollAll();
      expect(lines.filter((l) => l.msg === 'session blocked on a lock')).toHaveLength(1); // once per wait

      await holder.query('ROLLBACK');
      await waiting;
      await p.pollAll();
      expect(await metricValue(registry, 'pgmaintd_blocked_sessions', labels)).toBe(0);
      expect(await metricValue(registry, 'pgmaintd_lock_wait_max_seconds', labels)).toBe(0);
    } finally {
      await holder.end();
      await waiter.end();
      await p.stop();
    }
  });
});

describe('activity collector', () => {
  it('counts sessions in each state, zero-fills the rest, leaves out its own, and measures held transactions', async () => {
    const { registry, p } = poller((r) => [new ActivityCollector(r)]);
    const idle = await session();
    const idleInTx = await session();
    const aborted = await session();
    const active = await session();
    try {
      const idleInTxPid = await pidOf(idleInTx); // asked before: each statement moves state_change
      await idleInTx.query('BEGIN; SELECT 1');
      await aborted.query('BEGIN');
      await aborted.query('SELECT 1/0').catch(() => undefined);
      const activePid = await pidOf(active);
      const running = active.query('SELECT pg_sleep(60)').catch(() => undefined); // cancelled below
      // the transaction has been idle for over a second, and the sleep is running on the server
      await waitFor(
        async () =>
          (
            await db.pool.query<{ ok: boolean }>(
              `SELECT count(*) = 2 AND bool_and(CASE pid
                        WHEN $1 THEN clock_timestamp() - state_change > interval '1 second'
                        ELSE state = 'active' AND wait_event = 'PgSleep' END) AS ok
                 FROM pg_stat_activity WHERE pid IN ($1, $2)`,
              [idleInTxPid, activePid],
            )
          ).rows[0]!.ok,
        (ok) => ok,
        20_000,
        50,
      );

      await p.pollAll();
      const text = await registry.metrics();
      const count = (state: string) =>
        text
          .split('\n')
          .filter(
            (l) =>
              l.startsWith('pg_stat_activity_count{') &&
              l.includes(`datname="${db.name}"`) &&
              l.includes(`state="${state}"`),
          )
          .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
      expect(count('idle')).toBeGreaterThanOrEqual(1);
      expect(count('idle in transaction')).toBe(1);
      expect(count('idle in transaction (aborted)')).toBe(1);
      expect(count('active')).toBe(1);
      expect(count('disabled')).toBe(0);
      // zero-filled: every state of this database has a series
      for (const state of STATES) expect(text).toContain(`datname="${db.name}",state="${state}"`);
      expect(text).toMatch(
        new RegExp(
          `^pg_stat_activity_count\\{datname="${db.name}",state="active",usename="[^"]+",application_name="collector-test",backend_type="client backend",wait_event_type="Timeout",wait_event="PgSleep"\\} 1$`,
          'm',
        ),
      );
      expect(text).not.toMatch(/application_name="pg-maintd"/); // its own sessions are left out
      const idleAge = await metricValue(registry, 'pgmaintd_idle_in_transaction_max_seconds', {
        datname: db.name,
      });
      expect(idleAge).toBeGreaterThanOrEqual(1);
      const maxTx = text
        .split('\n')
        .filter(
          (l) =>
            l.startsWith('pg_stat_activity_max_tx_duration{') &&
            l.includes('state="idle in transaction"') &&
            l.includes(`datname="${db.name}"`),
        )
        .map((l) => Number(l.split(' ').at(-1)));
      expect(Math.max(...maxTx)).toBeGreaterThanOrEqual(1);
      await db.pool.query('SELECT pg_cancel_backend($1)', [activePid]);
      await running;
    } finally {
      for (const c of [idle, idleInTx, aborted, active]) await c.end();
      await p.stop();
    }
  });
});

describe('database collectors', () => {
  it('reports sizes, connection limits and pg_stat_database counters with the reference names', async () => {
    await db.pool.query(`ALTER DATABASE ${db.name} CONNECTION LIMIT 42`);
    const { registry, p } = poller((r) => [new DatabaseCollector(r), new StatDatabaseCollector(r)]);
    try {
      await once(
        'CREATE TABLE IF NOT EXISTS counted (id int); INSERT INTO counted SELECT generate_series(1, 500)',
      );
      await p.pollAll();
      const labels = { datname: db.name };
      expect(await metricValue(registry, 'pg_database_size_bytes', labels)).toBeGreaterThan(1_000_000);
      expect(await metricValue(registry, 'pg_database_connection_limit', labels)).toBe(42);
      // backends flush their statistics within about a second: poll until the inserts show
      const inserted = await waitFor(
        async () => {
          await p.pollAll();
          return metricValue(registry, 'pg_stat_database_tup_inserted', labels);
        },
        (v) => (v ?? 0) >= 500,
        15_000,
        250,
      );
      expect(inserted).toBeGreaterThanOrEqual(500);
      const text = await registry.metrics();
      expect(text).toMatch(/^# TYPE pg_stat_database_xact_commit counter$/m);
      expect(text).toMatch(/^# TYPE pg_stat_database_numbackends gauge$/m);
      expect(text).toMatch(
        new RegExp(`^pg_stat_database_deadlocks\\{datid="\\d+",datname="${db.name}"\\} 0$`, 'm'),
      );
      for (const c of [
        'xact_commit',
        'xact_rollback',
        'blks_read',
        'blks_hit',
        'tup_returned',
        'tup_fetched',
        'tup_updated',
        'tup_deleted',
        'conflicts',
        'temp_files',
        'temp_bytes',
      ]) {
        expect(text).toMatch(
          new RegExp(`^pg_stat_database_${c}\\{datid="\\d+",datname="${db.name}"\\} \\d+$`, 'm'),
        );
      }
    } finally {
      await p.stop();
    }
  });
});

describe('settings collector', () => {
  it('exports numeric and boolean settings with the reference names, in seconds and bytes', async () => {
    const { registry, p } = poller((r) => [new SettingsCollector(r)]);
    try {
      await p.pollAll();
      const v = (name: string) => metricValue(registry, name, {});
      expect(await v('pg_settings_max_connections')).toBe(200); // the harness sets it
      expect(await v('pg_settings_superuser_reserved_connections')).toBe(3);
      expect(await v('pg_settings_max_locks_per_transaction')).toBe(64);
      expect(await v('pg_settings_shared_buffers_bytes')).toBe(128 * 1024 * 1024);
      expect(await v('pg_settings_log_min_duration_statement_seconds')).toBe(-1);
      expect(await v('pg_settings_fsync')).toBe(0); // bool: the harness runs with fsync off
      expect(await v('pg_settings_track_io_timing')).toBe(1);
      expect(await v('pg_settings_checkpoint_timeout_seconds')).toBe(300);
      const text = await registry.metrics();
      expect(text).toMatch(/^# HELP pg_settings_shared_buffers_bytes .+ \[Units converted to bytes\.\]$/m);
    } finally {
      await p.stop();
    }
  });

  it('converts units like the reference and leaves -1 alone', () => {
    const row = (setting: string, unit: string) => ({
      name: 'x.y',
      setting,
      unit,
      short_desc: 'd',
      vartype: 'integer',
    });
    expect(settingMetric(row('1000', 'ms'))).toEqual({
      name: 'pg_settings_x_y_seconds',
      help: 'd [Units converted to seconds.]',
      value: 1,
    });
    expect(settingMetric(row('2', 'min'))!.value).toBe(120);
    expect(settingMetric(row('16384', '8kB'))!.value).toBe(16384 * 8192);
    expect(settingMetric(row('-1', 'kB'))!.value).toBe(-1);
    expect(settingMetric(row('5', 'parsecs'))).toBeUndefined();
    expect(settingMetric(row('2', '64kB'))!.value).toBe(2 * 65536);
    expect(settingMetric(row('100ms', 'ms'))!.value).toBe(0.1); // a fork that appends the unit
    expect(settingMetric({ ...row('3', ''), name: 'ext-plugin.max-things' })!.name).toBe(
      'pg_settings_ext_plugin_max_things',
    );
    expect(settingMetric({ ...row('on', ''), vartype: 'bool' })).toEqual({
      name: 'pg_settings_x_y',
      help: 'd',
      value: 1,
    });
  });
});

describe('tables collector', () => {
  it('reports live and dead tuples after inserts and deletes, sizes, and vacuum history, for the largest tables only', async () => {
    await once(`CREATE TABLE big_one (id int, pad text); INSERT INTO big_one SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
      CREATE TABLE mid_one (id int); INSERT INTO mid_one SELECT generate_series(1, 2000);
      CREATE TABLE tiny_one (id int); INSERT INTO tiny_one VALUES (1);`);
    // the largest by the planner's estimate, which ANALYZE (or VACUUM) sets: before the DELETE, so its
    // dead rows are counted by the statistics, not by ANALYZE's sample
    await once('ANALYZE big_one, tiny_one');
    await once('DELETE FROM big_one WHERE id <= 5000');
    await once('VACUUM (ANALYZE) mid_one'); // VACUUM cannot share a multi-statement query
    const { registry, p } = poller((r) => [new TablesCollector(r, { limit: 2 })]);
    try {
      const big = { datname: db.name, schemaname: 'public', relname: 'big_one' };
      const dead = await waitFor(
        async () => {
          await p.pollAll();
          return metricValue(registry, 'pg_stat_user_tables_n_dead_tup', big);
        },
        (v) => v === 5000,
        15_000,
        250,
      );
      expect(dead).toBe(5000);
      expect(await metricValue(registry, 'pg_stat_user_tables_n_live_tup', big)).toBe(15000);
      expect(await metricValue(registry, 'pg_stat_user_tables_n_tup_del', big)).toBe(5000);
      expect(await metricValue(registry, 'pg_stat_user_tables_table_size_bytes', big)).toBeGreaterThan(
        4_000_000,
      );
      const mid = { ...big, relname: 'mid_one' };
      expect(await metricValue(registry, 'pg_stat_user_tables_vacuum_count', mid)).toBe(1);
      expect(await metricValue(registry, 'pg_stat_user_tables_last_vacuum', mid)).toBeGreaterThan(
        Date.now() / 1000 - 120,
      );
      const text = await registry.metrics();
      expect(text).not.toMatch(/relname="tiny_one"/); // bounded to the largest 2
      expect(text).toMatch(/^# TYPE pg_stat_user_tables_autovacuum_count counter$/m);
    } finally {
      await p.stop();
    }
  });
});

describe('per-database collectors', () => {
  async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: adminUrl() });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  it('poll each database of METRICS_DATABASES; one that fails loses only its own series, and says so once', async () => {
    const other = `${db.name}_other`;
    await admin((c) => c.query(`CREATE DATABASE ${other}`));
    try {
      await once(
        'CREATE TABLE elsewhere (id int); INSERT INTO elsewhere SELECT generate_series(1, 300)',
        withDatabase(db.url, other),
      );
      await once('CREATE TABLE IF NOT EXISTS at_home (id int); INSERT INTO at_home VALUES (1)');
      const { logger, lines } = capture();
      const { registry, p } = poller((r) => [new TablesCollector(r, { limit: 10 })], logger, [
        db.name,
        other,
        'no_such_database',
      ]);
      try {
        const home = { datname: db.name, schemaname: 'public', relname: 'at_home' };
        const there = { datname: other, schemaname: 'public', relname: 'elsewhere' };
        await waitFor(
          async () => {
            await p.pollAll();
            return [
              await metricValue(registry, 'pg_stat_user_tables_n_tup_ins', there),
              await metricValue(registry, 'pg_stat_user_tables_n_tup_ins', home),
            ];
          },
          ([a, b]) => a === 300 && (b ?? 0) >= 1, // statistics reach the views within about a second
          15_000,
          250,
        );
        // one database is missing: the collector reports the failure, the other databases stay served
        expect(
          await metricValue(registry, 'pg_scrape_collector_success', { collector: 'stat_user_tables' }),
        ).toBe(0);
        expect(await metricValue(registry, 'pg_exporter_last_scrape_error', {})).toBe(1);
        const said = lines.filter((l) => l.database === 'no_such_database');
        expect(said).toHaveLength(1); // once, though it failed on every poll
        expect(String((said[0]!.err as { message: string }).message)).toMatch(/does not exist/);
        // each database has its own one-connection pool; the main database uses the poller's pool
        expect(p.pools().map((x) => x.name)).toEqual(
          expect.arrayContaining([`pool:metrics:${other}`, 'pool:metrics']),
        );
      } finally {
        await p.stop();
      }
    } finally {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${other} WITH (FORCE)`));
    }
  });

  it('with *, discover the databases on each round, and drop the series of one that is gone', async () => {
    // a private cluster: the shared one has databases of other test files coming and going
    const cluster = await startPrivateCluster();
    const { registry, p } = (() => {
      const registry = new Registry();
      const p = new Poller({
        db: {
          url: cluster.url('postgres'),
          ssl: { mode: 'disable', rejectUnauthorized: true },
          pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
        },
        registry,
        logger: createLogger({ level: 'silent', format: 'json' }),
        collectors: [new TablesCollector(registry, { limit: 5 })],
        intervalMs: 60_000,
        statementTimeoutMs: 5000,
        lockTimeoutMs: 1000,
        databases: '*',
      });
      return { registry, p };
    })();
    const admin = new pg.Client({ connectionString: cluster.url('postgres') });
    await admin.connect();
    try {
      await admin.query('CREATE DATABASE found_one');
      await admin.query('CREATE DATABASE not_allowed');
      await admin.query('ALTER DATABASE not_allowed ALLOW_CONNECTIONS false');
      const o = new pg.Client({ connectionString: cluster.url('found_one') });
      await o.connect();
      await o.query('CREATE TABLE discovered (id int); INSERT INTO discovered VALUES (1), (2)');
      await o.end();
      const found = { datname: 'found_one', schemaname: 'public', relname: 'discovered' };
      await waitFor(
        async () => {
          await p.pollAll();
          return metricValue(registry, 'pg_stat_user_tables_n_tup_ins', found);
        },
        (v) => v === 2,
        15_000,
        250,
      );
      const names = p.pools().map((x) => x.name);
      expect(names).toContain('pool:metrics:found_one');
      expect(names).not.toContain('pool:metrics:not_allowed'); // datallowconn false: not polled
      expect(names.some((n) => /template/.test(n))).toBe(false);
      expect(
        await metricValue(registry, 'pg_scrape_collector_success', { collector: 'stat_user_tables' }),
      ).toBe(1);

      await admin.query('DROP DATABASE found_one WITH (FORCE)');
      await p.pollAll();
      expect(await metricValue(registry, 'pg_stat_user_tables_n_tup_ins', found)).toBeUndefined();
      expect(p.pools().map((x) => x.name)).not.toContain('pool:metrics:found_one');
      expect(
        await metricValue(registry, 'pg_scrape_collector_success', { collector: 'stat_user_tables' }),
      ).toBe(1); // a database that is gone is not a failing one
    } finally {
      await admin.end();
      await p.stop();
      await cluster.stop();
    }
  });
});

describe('replication collector and pool metrics', () => {
  it('a primary is not a replica and has no lag; the daemon’s pools are visible', async () => {
    const { registry, p } = poller((r) => [new ReplicationCollector(r)]);
    registerPoolMetrics(registry, () => p.pools());
    try {
      await p.pollAll();
      expect(await metricValue(registry, 'pg_replication_is_replica', {})).toBe(0);
      expect(await metricValue(registry, 'pg_replication_lag_seconds', {})).toBe(0);
      expect(
        await metricValue(registry, 'pgmaintd_db_pool_clients', { pool: 'metrics', state: 'total' }),
      ).toBeGreaterThanOrEqual(1);
      expect(
        await metricValue(registry, 'pgmaintd_db_pool_clients', { pool: 'metrics', state: 'waiting' }),
      ).toBe(0);
    } finally {
      await p.stop();
    }
  });
});

describe('statements collector', () => {
  const opts = { limit: 20, queryText: false, queryTextLength: 40 };

  it('exports one query text series per queryid, though two roles ran the statement', async () => {
    await db.pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await db.pool.query('CREATE TABLE IF NOT EXISTS shared_q (id int)');
    const role = `second_${db.name}`;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'second-pw'`);
    await db.pool.query(`GRANT SELECT ON shared_q TO ${role}`);
    try {
      const u = new URL(db.url);
      u.username = role;
      u.password = 'second-pw';
      await once('SELECT count(*) FROM shared_q');
      await once('SELECT count(*) FROM shared_q', u.toString());
      const { registry, p } = poller((r) => [
        new StatementsCollector(r, { limit: 5000, queryText: true, queryTextLength: 60 }),
      ]);
      try {
        await p.pollAll();
        const text = await registry.metrics();
        const id =
          /^pg_stat_statements_query_id\{queryid="(-?\d+)",query="SELECT count\(\*\) FROM shared_q"\} 1$/m.exec(
            text,
          )?.[1];
        expect(id).toBeDefined();
        const calls = text
          .split('\n')
          .filter((l) => l.startsWith('pg_stat_statements_calls_total{') && l.includes(`queryid="${id}"`));
        expect(calls).toHaveLength(2); // one per role
        expect(
          text.split('\n').filter((l) => l.startsWith(`pg_stat_statements_query_id{queryid="${id}"`)),
        ).toHaveLength(1);
      } finally {
        await p.stop();
      }
    } finally {
      await db.pool.query(`REVOKE ALL ON shared_q FROM ${role}`);
      await admin.query(`DROP ROLE ${role}`).catch(() => undefined);
      await admin.end();
    }
  });

  it('works for a role without pg_monitor (shared_preload_libraries is not readable to it)', async () => {
    await db.pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    const role = `plain_${db.name}`;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'plain-pw'`);
    try {
      const u = new URL(db.url);
      u.username = role;
      u.password = 'plain-pw';
      const registry = new Registry();
      const p = new Poller({
        db: {
          url: u.toString(),
          ssl: { mode: 'disable', rejectUnauthorized: true },
          pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
        },
        registry,
        logger: createLogger({ level: 'silent', format: 'json' }),
        collectors: [new StatementsCollector(registry, { limit: 5, queryText: false, queryTextLength: 40 })],
        intervalMs: 60_000,
        statementTimeoutMs: 5000,
        lockTimeoutMs: 1000,
      });
      try {
        await p.pollAll();
        expect(
          await metricValue(registry, 'pg_scrape_collector_success', { collector: 'stat_statements' }),
        ).toBe(1);
        expect(await metricValue(registry, 'pgmaintd_pg_stat_statements_available', {})).toBe(1);
      } finally {
        await p.stop();
      }
    } finally {
      await admin.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => undefined);
      await admin.end();
    }
  });

  it('says once that pg_stat_statements is missing, exports nothing, and does not fail', async () => {
    await db.pool.query('DROP EXTENSION IF EXISTS pg_stat_statements');
    const { logger, lines } = capture();
    const { registry, p } = poller((r) => [new StatementsCollector(r, opts)], logger);
    try {
      await p.pollAll();
      await p.pollAll();
      expect(await metricValue(registry, 'pgmaintd_pg_stat_statements_available', {})).toBe(0);
      expect(
        await metricValue(registry, 'pg_scrape_collector_success', { collector: 'stat_statements' }),
      ).toBe(1);
      expect(await registry.metrics()).not.toMatch(/^pg_stat_statements_calls_total\{/m);
      const said = lines.filter((l) => String(l.msg).startsWith('pg_stat_statements is not installed'));
      expect(said).toHaveLength(1);
      expect(String(said[0]!.msg)).toMatch(/CREATE EXTENSION pg_stat_statements/);
    } finally {
      await p.stop();
    }
  });

  it('reports calls per statement, and bounds the series to the top N by total and by mean, keeping a rare slow one', async () => {
    await db.pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await db.pool.query('CREATE TABLE IF NOT EXISTS seven_times (id int)');
    await db.pool.query('SELECT pg_stat_statements_reset()');
    const c = await session();
    try {
      for (let i = 0; i < 7; i++) await c.query('SELECT count(*) FROM seven_times');
      await c.query('SELECT pg_sleep(0.3)'); // once: slow by mean, small by total
      // 1500 distinct statements (different select lists), each run a few times
      await c.query(`DO $$ BEGIN FOR i IN 1..1500 LOOP
        EXECUTE 'SELECT ' || rtrim(repeat('1,', i), ','); EXECUTE 'SELECT ' || rtrim(repeat('1,', i), ','); END LOOP; END $$`);
    } finally {
      await c.end();
    }
    const ids = await db.pool.query<{ queryid: string; query: string }>(
      "SELECT queryid::text AS queryid, query FROM pg_stat_statements WHERE query = 'SELECT count(*) FROM seven_times' OR query LIKE 'SELECT pg_sleep%'",
    );
    const seven = ids.rows.find((r) => r.query.includes('seven_times'))!.queryid;
    const slow = ids.rows.find((r) => r.query.startsWith('SELECT pg_sleep'))!.queryid;

    const { registry, p } = poller((r) => [new StatementsCollector(r, opts)]);
    try {
      await p.pollAll();
      const text = await registry.metrics();
      const series = text.split('\n').filter((l) => l.startsWith('pg_stat_statements_calls_total{'));
      expect(series.length).toBeGreaterThan(0);
      expect(series.length).toBeLessThanOrEqual(2 * opts.limit); // bounded, though there are over 1500
      expect(text).toContain(`queryid="${slow}"`); // the rare slow one is kept (top by mean)
      const { rows } = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_statements');
      expect(Number(rows[0]!.n)).toBeGreaterThan(1500);
      expect(await metricValue(registry, 'pgmaintd_pg_stat_statements_available', {})).toBe(1);
      expect(text).not.toMatch(/^pg_stat_statements_query_id\{/m); // query text is off by default
      expect(text).toMatch(/^# TYPE pg_stat_statements_seconds_total counter$/m);

      // with a larger N the frequent statement is there too, with its calls and labels
      const wide = poller((r) => [
        new StatementsCollector(r, { limit: 5000, queryText: true, queryTextLength: 40 }),
      ]);
      try {
        await wide.p.pollAll();
        const calls = await metricValue(wide.registry, 'pg_stat_statements_calls_total', {
          queryid: seven,
          datname: db.name,
        });
        expect(calls).toBe(7);
        const wideText = await wide.registry.metrics();
        const q = new RegExp(
          `^pg_stat_statements_query_id\\{queryid="${seven}",query="([^"]*)"\\} 1$`,
          'm',
        ).exec(wideText);
        expect(q).not.toBeNull();
        expect(q![1]!.length).toBeLessThanOrEqual(40); // truncated
      } finally {
        await wide.p.stop();
      }
    } finally {
      await p.stop();
    }
  });
});

describe('query text with secrets in it (METRICS_QUERY_TEXT on)', () => {
  it('a password in ALTER/CREATE ROLE (any quoting, cut short or not) reaches neither /metrics nor the log', async () => {
    const suffix = Math.random().toString(16).slice(2, 8);
    const role = `mask_${suffix}`;
    const secrets = Array.from({ length: 7 }, (_, i) => `pw${i}-${suffix}-s3cr3t`);
    const long = `${secrets[6]}-${'x'.repeat(300)}`; // longer than the text kept: cut inside the literal
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    const holder = new pg.Client({ connectionString: adminUrl() });
    const waiter = new pg.Client({ connectionString: adminUrl() });
    await holder.connect();
    await waiter.connect();
    let waiting: Promise<unknown> | undefined;
    try {
      await db.pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements'); // where the poller reads it
      // utility statements keep their literals in pg_stat_statements (track_utility is on by default)
      await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${secrets[0]}'`);
      await admin.query(`ALTER ROLE ${role} PASSWORD $$${secrets[1]}$$`);
      await admin.query(`ALTER ROLE ${role} PASSWORD $pw$${secrets[2]}$pw$`);
      await admin.query(`ALTER ROLE ${role} PASSWORD E'${secrets[3]}'`);
      await admin.query(`ALTER ROLE ${role} PASSWORD U&'${secrets[4]}'`);
      await admin.query(`ALTER ROLE ${role} PASSWORD '${long}'`);
      // and a session blocked on a lock while changing a password: pg_stat_activity has its text
      await holder.query(`BEGIN; ALTER ROLE ${role} PASSWORD 'holder-${secrets[5]}'`);
      const waiterPid = (await waiter.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      waiting = waiter.query(`ALTER ROLE ${role} PASSWORD 'waiter-${secrets[5]}'`).catch(() => undefined);
      await waitFor(
        async () =>
          (await admin.query(`SELECT wait_event_type FROM pg_stat_activity WHERE pid = ${waiterPid}`))
            .rows[0],
        (r) => r?.wait_event_type === 'Lock',
        10_000,
        20,
      );

      const { config } = loadConfig({
        defaultsDir: tempDir('cfg-none-'),
        env: {
          DATABASE_URL: adminUrl(),
          METRICS_QUERY_TEXT: 'true',
          METRICS_QUERY_TEXT_LENGTH: '60',
          METRICS_STATEMENTS_LIMIT: '10000',
          METRICS_LOCK_WAIT_LOG_AFTER: '0s',
        },
      });
      const { logger, lines } = capture('debug');
      const { registry, p } = poller((r) => defaultCollectors(r, config.metrics), logger, '*');
      try {
        await p.pollAll();
        const text = await registry.metrics();
        const logText = JSON.stringify(lines);
        for (const secret of [...secrets, 'x'.repeat(40)]) {
          expect(text).not.toContain(secret);
          expect(logText).not.toContain(secret);
        }
        // the statements are exported, masked, and the lock wait is logged, masked
        const exported = [
          ...text.matchAll(/^pg_stat_statements_query_id\{queryid="-?\d+",query="([^"]*)"\} 1$/gm),
        ]
          .map((m) => m[1]!)
          .filter((q) => q.includes(role));
        expect(exported).toEqual(
          expect.arrayContaining([`ALTER ROLE ${role} PASSWORD ?`, `CREATE ROLE ${role} LOGIN PASSWORD ?`]),
        );
        for (const q of exported) expect(q.length).toBeLessThanOrEqual(60);
        const blocked = lines.find(
          (l) => l.msg === 'session blocked on a lock' && JSON.stringify(l).includes(role),
        );
        expect(blocked).toMatchObject({
          blocked: { query: `ALTER ROLE ${role} PASSWORD ?` },
          blocking: { query: `BEGIN; ALTER ROLE ${role} PASSWORD ?` },
        });
      } finally {
        await p.stop();
      }
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await waiting;
      await Promise.all([holder.end(), waiter.end()]);
      await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
      await admin.end();
    }
  });
});

describe('statements cardinality', () => {
  it('with 5,000 distinct statements, exports at most 2N series and keeps the slowest by mean', async () => {
    // a private cluster: pg_stat_statements is server-wide, and room for all 5,000 (its default max is 5000)
    const cluster = await startPrivateCluster({ settings: { 'pg_stat_statements.max': 10_000 } });
    const url = cluster.url('postgres');
    const registry = new Registry();
    const limit = 50;
    const p = new Poller({
      db: {
        url,
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
      },
      registry,
      logger: createLogger({ level: 'silent', format: 'json' }),
      collectors: [new StatementsCollector(registry, { limit, queryText: false, queryTextLength: 40 })],
      intervalMs: 60_000,
      statementTimeoutMs: 5000,
      lockTimeoutMs: 1000,
    });
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query('CREATE EXTENSION pg_stat_statements');
      await c.query('SELECT pg_stat_statements_reset()');
      // 5,000 statements of distinct shape (100 select-list widths x 50 expression depths), each run 3 times
      await c.query(`DO $$ BEGIN
        FOR w IN 1..100 LOOP FOR d IN 1..50 LOOP FOR k IN 1..3 LOOP
          EXECUTE 'SELECT ' || rtrim(repeat('1,', w), ',') || ' WHERE 1 ' || repeat('+ 1 ', d) || '> 0';
        END LOOP; END LOOP; END LOOP; END $$`);
      await c.query('SELECT pg_sleep(0.25)'); // once: the slowest by mean, small by total
      const { rows } = await c.query<{ n: string; slow: string }>(
        `SELECT count(*) AS n, (SELECT queryid::text FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 1) AS slow
           FROM pg_stat_statements`,
      );
      expect(Number(rows[0]!.n)).toBeGreaterThan(5000);
      await p.pollAll();
      const text = await registry.metrics();
      for (const family of [
        'calls_total',
        'seconds_total',
        'rows_total',
        'block_read_seconds_total',
        'block_write_seconds_total',
      ]) {
        const series = text.split('\n').filter((l) => l.startsWith(`pg_stat_statements_${family}{`));
        expect(series.length, family).toBeGreaterThan(limit - 1);
        expect(series.length, family).toBeLessThanOrEqual(2 * limit);
      }
      expect(text).toContain(`queryid="${rows[0]!.slow}"`);
    } finally {
      await c.end();
      await p.stop();
      await cluster.stop();
    }
  });
});
