#!/usr/bin/env node
/**
 * `npm run bench:signals`: what the collectors of the signals SREs page on (database_wraparound,
 * bloat, invalid_indexes, wait_events, stat_io, stat_checkpointer, stat_wal) cost on a realistic
 * database: the series each family exports and each collector's poll time (median and max of
 * --polls polls, METRICS_STATEMENT_TIMEOUT's default of 5 s as the budget), on one or more majors.
 *
 * The database: --tables tables (id primary key, an indexed int, a text column), --rows rows each, a
 * third of them updated twice with autovacuum off (bloat), three invalid indexes (failed CREATE INDEX
 * CONCURRENTLY), and during the polls a lock wait (one holder, three waiters) and a pg_sleep, so
 * wait_events has something to sample. A throwaway cluster per major; all removed at the end.
 */
import { Registry } from 'prom-client';
import { LocalCluster } from '../dist/embedded/local-cluster.js';
import { createLogger } from '../dist/log/logger.js';
import { defaultCollectors } from '../dist/metrics/collectors/index.js';
import { Poller } from '../dist/metrics/poller.js';
import { loadConfig } from '../dist/config/load.js';
import { findServerBinaries } from '../dist/programs/server-binaries.js';
import { BENCH_SETTINGS, connect, fmt, log, median, num, onCleanup, parseOptions, runBench } from './lib.mjs';

const HELP = `usage: node bench/signals.mjs [--majors 15,18] [--tables 1000] [--rows 1000] [--polls 5]
`;
const opts = parseOptions(HELP, {
  majors: { type: 'string' },
  tables: { type: 'string' },
  rows: { type: 'string' },
  polls: { type: 'string' },
});
const MAJORS = (opts.majors ?? process.env.BENCH_MAJORS ?? '15,18').split(',').map((m) => Number(m.trim()));
const TABLES = num('--tables', opts.tables, 1000, 1, 100_000, true);
const ROWS = num('--rows', opts.rows, 1000, 1, 10_000_000, true);
const POLLS = num('--polls', opts.polls, 5, 1, 1000, true);
const STATEMENT_TIMEOUT_MS = 5000;
const NEW = [
  'database_wraparound',
  'bloat',
  'invalid_indexes',
  'wait_events',
  'stat_io',
  'stat_checkpointer',
  'stat_wal',
];
const FAMILIES = {
  database_wraparound: ['pg_txid_current', 'pg_database_wraparound_age_', 'pgmaintd_wraparound_'],
  bloat: ['pg_bloat_table_', 'pg_bloat_btree_'],
  invalid_indexes: ['pg_general_index_info_', 'pgmaintd_invalid_index_info'],
  wait_events: ['pgmaintd_wait_event_'],
  stat_io: ['pg_stat_io_'],
  stat_checkpointer: ['pg_stat_checkpointer_'],
  stat_wal: ['pg_stat_wal_'],
};

async function generate(cluster) {
  const c = await connect(cluster, 'postgres');
  await c.query('CREATE DATABASE bench');
  await c.end();
  const db = await connect(cluster, 'bench');
  await db.query('CREATE SCHEMA app');
  for (let i = 0; i < TABLES; i++) {
    await db.query(`CREATE TABLE app.t${i} (id bigint PRIMARY KEY, k int, v text);
      CREATE INDEX t${i}_k ON app.t${i} (k);
      INSERT INTO app.t${i} SELECT g, g, md5(g::text) FROM generate_series(1, ${ROWS}) g`);
    if (i % 3 === 0) await db.query(`UPDATE app.t${i} SET k = k + 1; UPDATE app.t${i} SET k = k + 1`);
  }
  await db.query('CREATE TABLE app.dup (x int); INSERT INTO app.dup VALUES (1), (1), (2), (2), (3), (3)');
  for (const n of [1, 2, 3])
    await db.query(`CREATE UNIQUE INDEX CONCURRENTLY dup_${n} ON app.dup (x)`).catch(() => undefined);
  await db.query('ANALYZE');
  await db.end();
}

async function measure(major) {
  const cluster = new LocalCluster({
    binaries: findServerBinaries(major),
    settings: {
      ...BENCH_SETTINGS,
      track_io_timing: 'on',
      ...(major >= 14 ? { track_wal_io_timing: 'on' } : {}),
    },
  });
  onCleanup(() => cluster.stop());
  await cluster.start();
  log(`PostgreSQL ${major}: generating ${TABLES} tables of ${ROWS} rows`);
  await generate(cluster);
  const { config } = loadConfig({
    env: { DATABASE_URL: cluster.url('bench'), DB_SSL_MODE: 'disable' },
    defaultsDir: '/nonexistent-pgmaintd-defaults',
  });
  // one poller per collector, polled alone, so a poll's time is its own queries, not a wait for
  // one of the pool's two connections behind another collector
  const pollers = NEW.map((name) => {
    const registry = new Registry();
    const collectors = defaultCollectors(registry, config.metrics).filter((c) => c.name === name);
    const poller = new Poller({
      db: config.db,
      registry,
      logger: createLogger({ level: 'silent', format: 'json' }),
      collectors,
      intervalMs: 60_000,
      statementTimeoutMs: STATEMENT_TIMEOUT_MS,
      lockTimeoutMs: 1000,
    });
    return { name, registry, poller };
  });
  // sessions to sample: a lock held, three waiting on it, one in pg_sleep
  const sessions = await Promise.all([0, 1, 2, 3, 4].map(() => connect(cluster, 'bench')));
  await sessions[0].query('BEGIN; LOCK TABLE app.t1 IN ACCESS EXCLUSIVE MODE');
  for (const s of sessions.slice(1, 4)) void s.query('SELECT count(*) FROM app.t1').catch(() => undefined);
  void sessions[4].query('SELECT pg_sleep(3600)').catch(() => undefined);
  try {
    const rows = [];
    for (const { name, registry, poller } of pollers) {
      const ms = [];
      for (let i = 0; i < POLLS; i++) {
        await poller.pollAll();
        const value = async (metric) =>
          (await registry.getSingleMetric(metric).get()).values.find((v) => v.labels.collector === name)
            ?.value;
        if ((await value('pg_scrape_collector_success')) !== 1)
          throw new Error(`PostgreSQL ${major}: collector ${name} failed`);
        ms.push((await value('pg_scrape_collector_duration_seconds')) * 1000);
      }
      const lines = (await registry.metrics()).split('\n').filter((l) => l && !l.startsWith('#'));
      const series = lines.filter((l) => FAMILIES[name].some((p) => l.startsWith(p))).length;
      ms.sort((a, b) => a - b);
      rows.push({ name, series, median: median(ms), max: ms.at(-1) });
    }
    return rows;
  } finally {
    for (const s of sessions) await s.end().catch(() => undefined);
    for (const { poller } of pollers) await poller.stop();
  }
}

await runBench(async () => {
  const results = [];
  for (const major of MAJORS) results.push([major, await measure(major)]);
  console.log(
    `\n${TABLES} tables x ${ROWS} rows (+ a btree index each), ${POLLS} polls; budget: statement_timeout ${STATEMENT_TIMEOUT_MS} ms\n`,
  );
  console.log(
    `| collector | ${MAJORS.map((m) => `PG ${m} series | PG ${m} poll ms (median / max)`).join(' | ')} |`,
  );
  console.log(`| --- | ${MAJORS.map(() => '---: | ---:').join(' | ')} |`);
  for (const name of NEW) {
    const cells = results.map(([, rows]) => {
      const r = rows.find((x) => x.name === name);
      return `${r.series} | ${fmt(r.median, 1)} / ${fmt(r.max, 1)}`;
    });
    console.log(`| ${name} | ${cells.join(' | ')} |`);
  }
});
