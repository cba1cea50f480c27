#!/usr/bin/env node
/**
 * `npm run bench:collectors`: the collectors of postgres_exporter's other default families on a
 * realistic database, in two parts.
 *
 *   diff    the families of those collectors as pg-maintd exports them and as the installed reference
 *           (Debian's prometheus-postgres-exporter) does, scraped from the same cluster at the same
 *           moment, compared by name, type and label names
 *   cost    each collector's series and time per poll (the median of --polls polls, each its query
 *           and the building of its samples), on --tables tables with two indexes and TOAST each,
 *           --roles roles, two slots (one streamed to by pg_receivewal, so pg_stat_replication has a
 *           row), and a VACUUM running
 *
 * A throwaway cluster in a temp folder (dist/'s LocalCluster); everything started is stopped at the end.
 *
 *   node bench/collectors.mjs [--tables 400] [--roles 50] [--polls 20]
 */
import { spawn } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../dist/config/load.js';
import { freePort } from '../dist/core/free-port.js';
import { LocalCluster } from '../dist/embedded/local-cluster.js';
import { createLogger } from '../dist/log/logger.js';
import { defaultCollectors } from '../dist/metrics/collectors/index.js';
import { createRegistry } from '../dist/metrics/registry.js';
import { findServerBinaries } from '../dist/programs/server-binaries.js';

const { values: opts } = parseArgs({
  options: {
    tables: { type: 'string', default: '400' },
    roles: { type: 'string', default: '50' },
    polls: { type: 'string', default: '20' },
  },
});
const TABLES = Number(opts.tables);
const ROLES = Number(opts.roles);
const POLLS = Number(opts.polls);
const REFERENCE = '/usr/bin/prometheus-postgres-exporter';
/** The collectors measured, and the prefixes of their families in the reference's output. */
const NEW = {
  replication_slots: ['pg_replication_slots_', 'pg_replication_slot_'],
  stat_replication: ['pg_stat_replication_'],
  stat_archiver: ['pg_stat_archiver_'],
  stat_database_conflicts: ['pg_stat_database_conflicts_'],
  stat_progress_vacuum: ['pg_stat_progress_vacuum_'],
  statio_user_tables: ['pg_statio_user_tables_'],
  stat_user_indexes: ['pg_stat_user_indexes_', 'pg_index_'],
  wal: ['pg_wal_'],
  roles: ['pg_roles_'],
  // not new: the table statistics, bounded the same way, for comparison
  stat_user_tables: ['pg_stat_user_tables_'],
};

const log = (...a) => console.error(`[${new Date().toISOString()}]`, ...a);
const children = [];
const dir = mkdtempSync(join(tmpdir(), 'bench-collectors-'));
const cluster = new LocalCluster({
  settings: { wal_level: 'replica', max_wal_senders: 5, archive_mode: 'on', archive_command: "'true'" },
});

/** Families in the text format: name -> { type, label name sets, samples }. */
function families(text) {
  const out = new Map();
  const fam = (n) => out.get(n) ?? out.set(n, { type: 'untyped', labels: new Set(), samples: 0 }).get(n);
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)/.exec(line);
    if (t) fam(t[1]).type = t[2];
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? /.exec(line);
    if (!m) continue;
    const names = [...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="/g)].map((x) => x[1]).sort();
    const f = fam(m[1]);
    f.labels.add(names.join(','));
    f.samples++;
  }
  return out;
}

async function scrape(url) {
  const res = await fetch(url);
  return res.text();
}

async function main() {
  await cluster.start();
  const url = cluster.url();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  log(`setting up ${TABLES} tables with two indexes each, ${ROLES} roles, two slots`);
  for (let i = 0; i < TABLES; i++) {
    await c.query(`CREATE TABLE t${i} (id int PRIMARY KEY, doc text, n int);
      CREATE INDEX t${i}_n ON t${i} (n);
      INSERT INTO t${i} SELECT g, repeat(md5(g::text), ${i % 10 === 0 ? 100 : 1}), g % 7
        FROM generate_series(1, ${50 + (i % 20) * 50}) g`);
  }
  await c.query('SELECT count(*) FROM t1 WHERE id = 3');
  for (let i = 0; i < ROLES; i++) await c.query(`CREATE ROLE r${i} CONNECTION LIMIT ${i % 5 === 0 ? i : -1}`);
  await c.query(`SELECT pg_create_physical_replication_slot('held', true);
    SELECT pg_create_physical_replication_slot('streamed', true); SELECT pg_switch_wal()`);
  await c.query(`CREATE TABLE big (i int, pad text) WITH (autovacuum_enabled = false);
    INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g; DELETE FROM big WHERE i % 2 = 0`);
  await c.query('ANALYZE');

  // a WAL sender on a slot: pg_receivewal streaming into a temp folder
  const bins = findServerBinaries();
  mkdirSync(join(dir, 'wal'));
  chownSync(join(dir, 'wal'), 0, 0);
  const rw = spawn(
    join(bins.binDir, 'pg_receivewal'),
    [
      '-D',
      join(dir, 'wal'),
      '-S',
      'streamed',
      '-h',
      '127.0.0.1',
      '-p',
      String(cluster.port),
      '-U',
      cluster.user,
      '--no-sync',
    ],
    {
      env: { ...process.env, PGPASSWORD: cluster.password },
      stdio: 'ignore',
    },
  );
  children.push(rw);
  // a VACUUM crawling through big while everything is sampled
  const vac = new pg.Client({ connectionString: url });
  vac.on('error', () => undefined);
  await vac.connect();
  await vac.query(`SET vacuum_cost_delay = '20ms'; SET vacuum_cost_limit = 1`);
  const vacuum = vac.query('VACUUM big').catch(() => undefined);
  for (const until = Date.now() + 30_000; Date.now() < until;) {
    const r = await c.query(`SELECT (SELECT count(*) FROM pg_stat_replication) AS senders,
      (SELECT count(*) FROM pg_stat_progress_vacuum) AS vacuums`);
    if (Number(r.rows[0].senders) > 0 && Number(r.rows[0].vacuums) > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  // pg-maintd's collectors, in process, on the daemon's configuration with index usage on
  const { config } = loadConfig({
    env: { DATABASE_URL: url, DB_SSL_MODE: 'disable', METRICS_COLLECTOR_INTERVALS: 'stat_user_indexes=5m' },
  });
  const registry = createRegistry();
  const collectors = defaultCollectors(registry, config.metrics).filter((x) => x.name in NEW);
  const pool = new pg.Pool({ connectionString: url, max: 1, options: '-c search_path=pg_catalog' });
  pool.on('error', () => undefined);
  const client = await pool.connect();
  const version = Number((await client.query('SHOW server_version_num')).rows[0].server_version_num);
  const ctx = {
    client,
    database: 'postgres',
    serverVersionNum: version,
    logger: createLogger({ level: 'silent', format: 'json' }),
  };
  const cost = [];
  for (const col of collectors) {
    const times = [];
    for (let i = 0; i < POLLS; i++) {
      const t0 = performance.now();
      await col.collect(ctx);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    cost.push({ collector: col.name, ms: times[Math.floor(times.length / 2)], max: times.at(-1) });
  }
  const mine = families(await registry.metrics());

  // the reference, scraped now, while the same sender and VACUUM run
  const port = await freePort();
  const dsn = `postgresql://${cluster.user}:${encodeURIComponent(cluster.password)}@127.0.0.1:${cluster.port}/postgres?sslmode=disable`;
  const ref = spawn(REFERENCE, [`--web.listen-address=127.0.0.1:${port}`], {
    env: { ...process.env, DATA_SOURCE_NAME: dsn },
    stdio: 'ignore',
  });
  children.push(ref);
  let refText = '';
  for (const until = Date.now() + 20_000; Date.now() < until && !refText.includes('pg_up 1');) {
    refText = await scrape(`http://127.0.0.1:${port}/metrics`).catch(() => '');
    if (!refText.includes('pg_up 1')) await new Promise((r) => setTimeout(r, 200));
  }
  const theirs = families(refText);
  const version0 = (/postgres_exporter_build_info\{[^}]*version="([^"]+)"/.exec(refText) ?? [])[1];

  // the report
  console.log(`# New collectors: reference diff and cost\n`);
  console.log(
    `PostgreSQL ${version}; reference: prometheus-postgres-exporter ${version0 ?? '?'}; ${TABLES} tables, ${ROLES} roles.\n`,
  );
  console.log('## Series and time per poll\n');
  console.log('| collector | families | series | median ms/poll | max ms |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const { collector, ms, max } of cost) {
    const fams = [...mine].filter(([n, f]) => f.samples > 0 && NEW[collector].some((p) => n.startsWith(p)));
    const series = fams.reduce((s, [, f]) => s + f.samples, 0);
    console.log(`| ${collector} | ${fams.length} | ${series} | ${ms.toFixed(1)} | ${max.toFixed(1)} |`);
  }
  console.log('\n## Families compared (with samples on either side)\n');
  console.log('| family | pg-maintd | reference |');
  console.log('| --- | --- | --- |');
  const prefixes = Object.values(NEW).flat();
  const names = new Set(
    [...mine, ...theirs]
      .filter(([n, f]) => f.samples > 0 && prefixes.some((p) => n.startsWith(p)))
      .map(([n]) => n),
  );
  const show = (f) => (f && f.samples > 0 ? `${f.type} {${[...f.labels].join(' | ')}} ×${f.samples}` : '—');
  for (const n of [...names].sort()) console.log(`| ${n} | ${show(mine.get(n))} | ${show(theirs.get(n))} |`);
  await vac.query('SELECT 1').catch(() => undefined);
  await c.query(`SELECT pg_cancel_backend(pid) FROM pg_stat_progress_vacuum`);
  await vacuum;
  await vac.end().catch(() => undefined);
  client.release();
  await pool.end();
  await c.end();
}

try {
  await main();
} finally {
  for (const ch of children) ch.kill('SIGTERM');
  await cluster.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
