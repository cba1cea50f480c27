#!/usr/bin/env node
/**
 * `npm run bench:metrics`: pg-maintd's /metrics against the reference exporter, postgres_exporter
 * (Debian's prometheus-postgres-exporter), side by side in one run against one database.
 *
 *   load     GET /metrics under wrk (2 threads, 4 connections), plain and gzip, side by side with the
 *            limit: a Fastify server serving the same bytes from memory (bench/static-body.mjs),
 *            in alternating rounds; then postgres_exporter under the same load. req/s, latency
 *            percentiles, body size, series
 *   cost     what each exporter costs the database per minute while scraped every 15 s and 10 times a
 *            second: statements and execution time (pg_stat_statements, by role), new connections
 *            (log_connections)
 *   outage   scrape latency while the database is stopped, and the load part again against the limit
 *
 * A throwaway cluster (LocalCluster) in a temp folder; everything the benchmark starts is stopped and
 * removed at the end, on failure, and on Ctrl-C. See bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../dist/core/free-port.js';
import { LocalCluster } from '../dist/embedded/local-cluster.js';
import {
  CLI,
  ROOT,
  cliEnv,
  codeVersion,
  connect,
  cpuSeconds,
  fail,
  fmt,
  httpGet,
  latencyStats,
  log,
  machineCpu,
  machineFacts,
  num,
  onCleanup,
  othersCpu,
  parseOptions,
  postmasterPid,
  runBench,
  setKillWait,
  startProcess,
  stopProcess,
} from './lib.mjs';
import { wrk } from './wrk.mjs';

setKillWait(30_000); // the daemon drains within SHUTDOWN_GRACE_PERIOD (25 s)

const DB = 'bench';
const TABLES = 20; // small tables in the database, so the table statistics have something to say
const DAEMON_ROLE = 'pgmaintd_bench';
const EXPORTER_ROLE = 'pgexporter_bench';
const DAEMON_INTERVAL_S = 15; // METRICS_INTERVAL's default; the daemon runs with it
const SLOW_EVERY_MS = 15_000; // a usual Prometheus scrape interval
const FAST_EVERY_MS = 100; // 10 scrapes a second
const OUTAGE_BUDGET_MS = 20_000; // most time the sequential scrapes of one exporter may take in the outage
const NOT_INSTALLED = 'reference: not installed (apt-get install prometheus-postgres-exporter)';
const STATIC_SERVER = join(ROOT, 'bench', 'static-body.mjs');
const GZIP = { 'Accept-Encoding': 'gzip' };

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

const HELP = `usage: node bench/metrics.mjs [options]     (npm run bench:metrics -- [options])

  --duration S         each measured wrk run, seconds (default 10, env BENCH_DURATION)
  --warmup S           wrk warm-up of each server and coding, not reported (default 2)
  --connections N      wrk connections (default 4)
  --threads N          wrk threads (default 2)
  --rounds N           rounds of (limit, pg-maintd) × (plain, gzip) runs; medians reported (default 3)
  --slow-window S      database-cost window while scraped every 15 s (default 60)
  --fast-window S      database-cost window while scraped 10 times a second (default 30)
                       (both at least 15 s; multiples of 15 s hold whole poll rounds of the daemon)
  --outage-scrapes N   sequential scrapes per exporter while the database is stopped (default 200)
  --outage-duration S  each wrk run while the database is stopped (default: --duration)
  --timeout S          time limit of every request (default 10)
  --exporter PATH      postgres_exporter binary (env PG_EXPORTER_BIN); default
                       /usr/bin/prometheus-postgres-exporter, else one on the PATH
  --out FILE           also write the results as JSON to FILE
  -h, --help           this text
`;

function options() {
  const values = parseOptions(HELP, {
    duration: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    threads: { type: 'string' },
    rounds: { type: 'string' },
    'slow-window': { type: 'string' },
    'fast-window': { type: 'string' },
    'outage-scrapes': { type: 'string' },
    'outage-duration': { type: 'string' },
    timeout: { type: 'string' },
    exporter: { type: 'string' },
    out: { type: 'string' },
  });
  const duration = num('duration', values.duration ?? process.env.BENCH_DURATION, 10, 1, 3600);
  return {
    duration,
    warmup: num('warmup', values.warmup, 2, 0, 600),
    connections: num('connections', values.connections, 4, 1, 1000, true),
    threads: num('threads', values.threads, 2, 1, 64, true),
    rounds: num('rounds', values.rounds, 3, 1, 100, true),
    slowWindow: num('slow-window', values['slow-window'], 60, 15, 3600),
    fastWindow: num('fast-window', values['fast-window'], 30, 15, 3600),
    outageScrapes: num('outage-scrapes', values['outage-scrapes'], 200, 1, 100_000, true),
    outageDuration: num('outage-duration', values['outage-duration'], duration, 1, 3600),
    timeout: num('timeout', values.timeout, 10, 1, 600),
    exporter: values.exporter ?? process.env.PG_EXPORTER_BIN,
    out: values.out,
  };
}

/**
 * Starts a long-running process (lib's startProcess: its own process group, JSON log lines to wait
 * for). Its peak-RSS sampler polls /proc only once, at the start: no polling CPU in the measurements.
 */
const start = (cmd, args, env) => startProcess(cmd, args, { env, sampleMs: 3_600_000 });
const alive = (proc) => proc.child.exitCode === null && proc.child.signalCode === null;
const outputTail = (proc) => `${proc.stdout.slice(-4000)}${proc.stderr.slice(-4000)}`;

// ---------------------------------------------------------------------------------------------
// HTTP: one request with a time limit; wrk runs against the static limit
// ---------------------------------------------------------------------------------------------

/** `n` sequential scrapes (stopping early after `budgetMs`); failures count with the time they took. */
async function sequential(url, agent, n, timeoutMs, budgetMs) {
  const ms = [];
  const statuses = {};
  let errors = 0;
  let timeouts = 0;
  let body;
  const t0 = performance.now();
  for (let i = 0; i < n && performance.now() - t0 < budgetMs; i++) {
    const r = await httpGet(url, agent, timeoutMs);
    ms.push(r.ms);
    if (r.status) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    else errors++;
    if (r.timeout) timeouts++;
    body ??= r.body?.toString('utf8');
  }
  const page =
    body === undefined
      ? {}
      : { bytes: Buffer.byteLength(body), series: seriesCount(body), pgUp: sampleOf(body, 'pg_up') };
  return { ...latencyStats(ms), wanted: n, errors, timeouts, statuses, ...page };
}

const seriesCount = (text) => text.split('\n').filter((l) => l.trim() && !l.startsWith('#')).length;
const sampleOf = (text, name) => {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};

/** One GET with extra request headers; the raw bytes (not decompressed) and the answer's headers. */
function getRaw(url, headers, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** The limit: Fastify serving `body` and `gz` from memory, in a process of its own. */
async function startStatic(work, name, body, gz, contentType) {
  const bodyFile = join(work, `${name}.txt`);
  const gzFile = join(work, `${name}.txt.gz`);
  writeFileSync(bodyFile, body);
  writeFileSync(gzFile, gz);
  const proc = start(process.execPath, [STATIC_SERVER, bodyFile, gzFile, contentType], {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? '/root',
  });
  const { line } = await proc.waitForLog((l) => l.msg === 'listening');
  return { proc, url: `http://127.0.0.1:${line.port}/metrics` };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length
    ? s.length % 2
      ? s[(s.length - 1) / 2]
      : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
    : NaN;
};

/**
 * pg-maintd's /metrics against the limit, side by side: the bytes pg-maintd serves now (plain and
 * gzip) go to a static server, then `rounds` rounds of wrk, each running the static server and
 * pg-maintd one after the other, plain then gzip, so both see the same machine. Medians over the
 * rounds; pg-maintd's CPU time per request from /proc.
 */
async function againstLimit(label, daemon, work, opts, phase, helpers) {
  const plain = await getRaw(daemon.url, {}, 5000);
  const gz = await getRaw(daemon.url, GZIP, 5000);
  if (plain.status !== 200 || gz.status !== 200)
    throw new Error(`${label}: pg-maintd answered ${plain.status} / ${gz.status}`);
  if (gz.headers['content-encoding'] !== 'gzip')
    log(`  note: pg-maintd did not answer gzip (this build has no gzip): the gzip rows get its plain text`);
  const text = plain.body.toString('utf8');
  const gzText = gz.headers['content-encoding'] === 'gzip' ? gunzipSync(gz.body).toString('utf8') : text;
  const page = {
    bytes: plain.body.length,
    gzipBytes: gz.body.length,
    series: seriesCount(text),
    gzipSeries: seriesCount(gzText),
    pgUp: sampleOf(text, 'pg_up'),
  };
  const limit = await startStatic(
    work,
    label.replace(/\W+/g, '-'),
    plain.body,
    gz.body,
    plain.headers['content-type'],
  );
  helpers.add(limit.proc.child.pid);
  try {
    const cases = [
      ['limit', 'plain', limit.url, {}],
      ['pg-maintd', 'plain', daemon.url, {}],
      ['limit', 'gzip', limit.url, GZIP],
      ['pg-maintd', 'gzip', daemon.url, GZIP],
    ];
    const load = (duration, headers) => ({
      duration,
      connections: opts.connections,
      threads: opts.threads,
      timeoutS: opts.timeout,
      headers,
    });
    if (opts.warmup > 0) for (const [, , url, headers] of cases) await wrk(url, load(opts.warmup, headers));
    const runs = Object.fromEntries(cases.map(([who, coding]) => [`${who} ${coding}`, []]));
    for (let round = 1; round <= opts.rounds; round++)
      for (const [who, coding, url, headers] of cases) {
        const pid = who === 'pg-maintd' ? daemon.proc.child.pid : limit.proc.child.pid;
        const cpu0 = cpuSeconds(pid);
        const r = await phase(`${label} ${who} ${coding} ${round}`, () =>
          wrk(url, load(opts.duration, headers)),
        );
        r.cpuS = cpuSeconds(pid) - cpu0;
        delete r.raw;
        runs[`${who} ${coding}`].push(r);
        log(
          `  ${label}, round ${round}: ${who} ${coding}: ${int(r.rps)} req/s, p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`,
        );
      }
    const summary = {};
    for (const [key, rs] of Object.entries(runs)) {
      const requests = rs.reduce((a, r) => a + r.requests, 0);
      summary[key] = {
        rps: median(rs.map((r) => r.rps)),
        p50: median(rs.map((r) => r.p50)),
        p99: median(rs.map((r) => r.p99)),
        p99Worst: Math.max(...rs.map((r) => r.p99)),
        max: Math.max(...rs.map((r) => r.max)),
        non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
        errors: rs.reduce((a, r) => a + r.errors, 0),
        timeouts: rs.reduce((a, r) => a + r.timeouts, 0),
        cpuMsPerReq: (rs.reduce((a, r) => a + r.cpuS, 0) * 1000) / requests,
        rounds: rs.map((r) => r.rps),
      };
    }
    for (const coding of ['plain', 'gzip'])
      summary[`pg-maintd ${coding}`].ofLimit =
        summary[`pg-maintd ${coding}`].rps / summary[`limit ${coding}`].rps;
    return { ...page, cases: summary };
  } finally {
    await stopProcess(limit.proc, 5000);
    helpers.delete(limit.proc.child.pid);
  }
}

/** postgres_exporter under the same wrk load, plain text (one run). */
async function referenceLoad(x, opts, duration, phase) {
  const cpu0 = cpuSeconds(x.proc.child.pid);
  const r = await phase(`load ${x.name}`, () =>
    wrk(x.url, { duration, connections: opts.connections, threads: opts.threads, timeoutS: opts.timeout }),
  );
  r.cpuS = cpuSeconds(x.proc.child.pid) - cpu0;
  r.cpuMsPerReq = (r.cpuS * 1000) / r.requests;
  delete r.raw;
  log(
    `  ${x.name}: ${int(r.rps)} req/s, p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, ${r.non2xx} non-2xx, ${r.errors} errors`,
  );
  return r;
}

/** Polls `fn` until it returns something truthy; throws after `timeoutMs`. */
async function waitFor(what, fn, timeoutMs, everyMs = 200) {
  const until = performance.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (performance.now() > until) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// The exporters
// ---------------------------------------------------------------------------------------------

function findExporter(explicit) {
  if (explicit) {
    if (!existsSync(explicit)) fail(`--exporter / PG_EXPORTER_BIN: ${explicit} does not exist`);
    return explicit;
  }
  const candidates = ['/usr/bin/prometheus-postgres-exporter'];
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean))
    for (const name of ['prometheus-postgres-exporter', 'postgres_exporter'])
      candidates.push(join(dir, name));
  return candidates.find((p) => existsSync(p));
}

function exporterVersion(bin) {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return /version (\S+)/.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown';
}

/** pg-maintd run, as an operator runs it: the password in PGPASSWORD, METRICS_INTERVAL at its default. */
async function startDaemon(cluster, password, work) {
  const proc = start(
    process.execPath,
    [CLI, 'run'],
    cliEnv(cluster, DB, {
      LOG_LEVEL: 'info',
      DATABASE_URL: cluster.url(DB, DAEMON_ROLE, null),
      PGPASSWORD: password,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      BACKUP_SCHEDULE: 'off',
      BACKUP_VERIFY_SCHEDULE: 'off',
      // a monitoring role (pg_monitor) may not create the migration tables; an exporter does not migrate
      MIGRATE_ON_START: 'false',
      BACKUP_DIR: join(work, 'backups'),
    }),
  );
  const listening = await proc.waitForLog((l) => l.msg === 'http server listening');
  await proc.waitForLog((l) => l.msg === 'pg-maintd started');
  const url = `http://127.0.0.1:${listening.line.address.port}/metrics`;
  return { name: 'pg-maintd', proc, url, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }) };
}

/** postgres_exporter on a free loopback port; the DSN (with the password) only in its environment. */
async function startExporter(bin, cluster, password) {
  const port = await freePort();
  const dsn = `postgresql://${EXPORTER_ROLE}:${encodeURIComponent(password)}@127.0.0.1:${cluster.port}/${DB}?sslmode=disable`;
  const proc = start(bin, [`--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? '/root',
    DATA_SOURCE_NAME: dsn,
  });
  return {
    name: 'postgres_exporter',
    proc,
    url: `http://127.0.0.1:${port}/metrics`,
    agent: new http.Agent({ keepAlive: true, maxSockets: 1 }),
  };
}

/** Waits until the exporter answers with pg_up 1 (and, for pg-maintd, every collector succeeded). */
async function waitUp(x, timeoutMs = 60_000) {
  return waitFor(
    `${x.name} reporting pg_up 1`,
    async () => {
      if (!alive(x.proc)) throw new Error(`${x.name} exited:\n${outputTail(x.proc)}`);
      const r = await httpGet(x.url, x.agent, 5000);
      if (!r.ok) return undefined;
      const text = r.body.toString('utf8');
      if (sampleOf(text, 'pg_up') !== 1) return undefined;
      const success = [...text.matchAll(/^pg_scrape_collector_success\{collector="[^"]+"\} (\S+)$/gm)];
      if (x.name === 'pg-maintd' && (!success.length || success.some((m) => m[1] !== '1'))) return undefined;
      return text;
    },
    timeoutMs,
  );
}

/** Waits until the daemon's /metrics says pg_up 0 (it notices at its next poll). */
async function waitDown(x, timeoutMs) {
  return waitFor(
    `${x.name} reporting pg_up 0`,
    async () => {
      const r = await httpGet(x.url, x.agent, 5000);
      return r.ok && sampleOf(r.body.toString('utf8'), 'pg_up') === 0;
    },
    timeoutMs,
  );
}

/**
 * Starts a cost window half-way between two poll rounds of the daemon, so a window of k × 15 s holds
 * exactly k rounds and per-minute numbers are not off by a whole round. Uses the newest
 * pgmaintd_collector_last_success_timestamp_seconds. Returns the seconds waited.
 */
async function alignToPolls(daemon) {
  const r = await httpGet(daemon.url, daemon.agent, 5000);
  if (!r.ok) return 0;
  const last = Math.max(
    ...[
      ...r.body
        .toString('utf8')
        .matchAll(/^pgmaintd_collector_last_success_timestamp_seconds\{[^}]*\} (\S+)$/gm),
    ].map((m) => Number(m[1])),
  );
  if (!Number.isFinite(last)) return 0;
  const now = Date.now() / 1000;
  let target = last + DAEMON_INTERVAL_S / 2;
  while (target < now + 0.1) target += DAEMON_INTERVAL_S;
  await sleep((target - now) * 1000);
  return target - now;
}

// ---------------------------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------------------------

/** The roles, the database with a few small tables, pg_stat_statements. */
async function prepare(cluster) {
  const passwords = {
    [DAEMON_ROLE]: randomBytes(12).toString('hex'),
    [EXPORTER_ROLE]: randomBytes(12).toString('hex'),
  };
  const admin = await connect(cluster);
  try {
    for (const [role, pw] of Object.entries(passwords))
      await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${pw}' IN ROLE pg_monitor`);
    await admin.query(`CREATE DATABASE ${DB}`);
    await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  } finally {
    await admin.end();
  }
  const db = await connect(cluster, DB);
  try {
    await db.query('CREATE EXTENSION pg_stat_statements');
    await db.query(`DO $$
      BEGIN
        FOR i IN 1..${TABLES} LOOP
          EXECUTE format('CREATE TABLE t%s (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text NOT NULL)', i);
          EXECUTE format('INSERT INTO t%s (v) SELECT md5(g::text) FROM generate_series(1, %s * 500) g', i, i);
        END LOOP;
      END $$`);
    await db.query('VACUUM ANALYZE');
  } finally {
    await db.end();
  }
  return passwords;
}

const logSize = (file) => {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
};

/** Sessions of `role` authorised since `offset` in the server log (log_connections = on). */
function connectionsSince(file, offset, role) {
  const text = readFileSync(file).subarray(offset).toString('utf8');
  return text.split(`connection authorized: user=${role} `).length - 1;
}

/**
 * One database-cost window: pg_stat_statements_reset(), scrape `x` every `everyMs` for `windowS`
 * (a scrape never overlaps the previous one; missed slots are skipped, as Prometheus does), then sum
 * calls and total_exec_time of the exporter's role and count its new sessions in the server log.
 */
async function costWindow(admin, cluster, x, role, everyMs, windowS, timeoutMs) {
  const logOffset = logSize(cluster.logFile);
  await admin.query('SELECT pg_stat_statements_reset()');
  const t0 = performance.now();
  const end = t0 + windowS * 1000;
  const ms = [];
  let failed = 0;
  for (let slot = 0; ;) {
    const at = t0 + slot * everyMs;
    if (at >= end) break;
    if (at > performance.now()) await sleep(at - performance.now());
    const r = await httpGet(x.url, x.agent, timeoutMs);
    ms.push(r.ms);
    if (!r.ok) failed++;
    slot = Math.max(slot + 1, Math.ceil((performance.now() - t0) / everyMs));
  }
  if (end > performance.now()) await sleep(end - performance.now());
  const seconds = (performance.now() - t0) / 1000;
  const sum = (
    await admin.query(
      `SELECT count(*)::int AS statements, coalesce(sum(calls), 0)::float8 AS calls,
              coalesce(sum(total_exec_time), 0)::float8 AS exec_ms
         FROM pg_stat_statements WHERE userid = $1::text::regrole`,
      [role],
    )
  ).rows[0];
  const top = (
    await admin.query(
      `SELECT calls::float8 AS calls, total_exec_time::float8 AS exec_ms,
              regexp_replace(left(query, 400), '\\s+', ' ', 'g') AS query
         FROM pg_stat_statements WHERE userid = $1::text::regrole
        ORDER BY total_exec_time DESC LIMIT 8`,
      [role],
    )
  ).rows;
  await sleep(100); // the log line of a session that just started
  const connections = connectionsSince(cluster.logFile, logOffset, role);
  const perMin = 60 / seconds;
  return {
    everyMs,
    seconds,
    scrapes: ms.length,
    failedScrapes: failed,
    scrape: latencyStats(ms),
    statements: sum.statements,
    queries: sum.calls,
    execMs: sum.exec_ms,
    connections,
    queriesPerMin: sum.calls * perMin,
    execMsPerMin: sum.exec_ms * perMin,
    connectionsPerMin: connections * perMin,
    top: top.map((t) => ({ calls: t.calls, execMs: t.exec_ms, query: t.query })),
  };
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

const int = (x) => (x === undefined || Number.isNaN(x) ? '–' : Math.round(x).toLocaleString('en-US'));
const ms = (x) =>
  x === undefined || Number.isNaN(x) ? '–' : x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0);
const mark = (ok) => (ok === undefined ? 'not measured' : ok ? 'PASS' : 'FAIL');
const statusText = (s) =>
  Object.entries(s ?? {})
    .map(([k, v]) => `HTTP ${k}: ${v}`)
    .join(' ') || '–';

/** The wrk rows of one phase: the limit and pg-maintd, plain and gzip, then postgres_exporter. */
function loadTable(r, opts, key) {
  const res = key === 'load' ? r.daemon.load : r.daemon.outage.load;
  const out = [
    '| server | coding | req/s | × limit | req/s per round | p50 ms | p99 ms (worst round) | max ms | non-2xx / errors / timeouts | body bytes | series | server CPU ms/req |',
    '|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|',
  ];
  for (const coding of ['plain', 'gzip'])
    for (const who of ['limit', 'pg-maintd']) {
      const c = res.cases[`${who} ${coding}`];
      const name = who === 'limit' ? 'static-body limit (Fastify, from memory)' : 'pg-maintd';
      out.push(
        `| ${name} | ${coding} | ${int(c.rps)} | ${who === 'limit' ? '1' : fmt(c.ofLimit, 2)} | ${c.rounds.map(int).join(' / ')} | ${ms(c.p50)} | ${ms(c.p99)} (${ms(c.p99Worst)}) | ${ms(c.max)} | ${c.non2xx} / ${c.errors} / ${c.timeouts} | ${int(coding === 'gzip' ? res.gzipBytes : res.bytes)} | ${int(coding === 'gzip' ? res.gzipSeries : res.series)} | ${fmt(c.cpuMsPerReq, 3)} |`,
      );
    }
  const ref = r.reference && (key === 'load' ? r.reference.load : r.reference.outage.load);
  if (!r.reference) out.push(`| postgres_exporter | plain | ${NOT_INSTALLED} | | | | | | | | | |`);
  else
    out.push(
      `| postgres_exporter | plain | ${int(ref.rps)} | | ${int(ref.rps)} | ${ms(ref.p50)} | ${ms(ref.p99)} | ${ms(ref.max)} | ${ref.non2xx} / ${ref.errors} / ${ref.timeouts} | ${key === 'load' ? int(r.reference.bytes) : int(r.reference.outage.sequential.bytes)} | ${key === 'load' ? int(r.reference.series) : int(r.reference.outage.sequential.series)} | ${fmt(ref.cpuMsPerReq, 3)} |`,
    );
  return out;
}

function render(r, opts) {
  const m = r.machine;
  const out = [];
  out.push('', `## pg-maintd /metrics vs postgres_exporter (${r.at.slice(0, 16)}Z)`, '');
  out.push(
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB RAM; node ${m.node}; ${m.pg}`,
    `- pg-maintd ${r.versions.daemon} (code ${r.versions.code}), METRICS_INTERVAL default (15s)`,
    `- ${r.versions.exporter ? `postgres_exporter ${r.versions.exporter} (${r.versions.exporterBin}), default flags` : NOT_INSTALLED}`,
    `- database \`${DB}\` (${TABLES} small tables), each exporter connects as its own role (pg_monitor), password in its environment; pg_stat_statements.track = ${r.settings.track}, track_utility = ${r.settings.trackUtility}, track_planning = ${r.settings.trackPlanning}`,
    '',
  );

  const both = [
    ['pg-maintd', r.daemon],
    ['postgres_exporter', r.reference],
  ];
  out.push(
    `### GET /metrics under load: wrk, ${opts.threads} threads, ${opts.connections} connections, ${opts.duration} s a run (median of ${opts.rounds} rounds; the static-body limit and pg-maintd alternate)`,
    '',
    ...loadTable(r, opts, 'load'),
    '',
  );
  if (r.reference)
    out.push(`pg-maintd req/s ÷ postgres_exporter req/s (plain) = **${fmt(r.ratios.rps, 1)}×**`, '');
  out.push(
    `### Database cost per minute (pg_stat_statements of the exporter's role; new sessions from log_connections)`,
    '',
    '| exporter | scraped | window s | scrapes (failed) | scrape p50 / p99 ms | statements | queries/min | exec ms/min | new connections/min |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const [name, x] of both) {
    if (!x) {
      out.push(`| ${name} | ${NOT_INSTALLED} | | | | | | | |`);
      continue;
    }
    for (const [label, w] of [
      ['every 15 s', x.slow],
      ['10 per second', x.fast],
    ])
      out.push(
        `| ${name} | ${label} | ${fmt(w.seconds, 1)} | ${w.scrapes} (${w.failedScrapes}) | ${ms(w.scrape.p50)} / ${ms(w.scrape.p99)} | ${w.statements} | ${fmt(w.queriesPerMin, 1)} | ${fmt(w.execMsPerMin, 2)} | ${fmt(w.connectionsPerMin, 1)} |`,
      );
  }
  out.push('');
  for (const [name, x] of both) {
    if (!x) continue;
    out.push(
      `${name}: at 10/s ÷ at every 15 s: queries ${fmt(x.costRatio.queries, 2)}×, exec time ${fmt(x.costRatio.exec, 2)}×, new connections ${fmt(x.slow.connectionsPerMin, 1)} → ${fmt(x.fast.connectionsPerMin, 1)}/min`,
    );
  }
  out.push('');
  for (const [name, x] of both) {
    if (!x) continue;
    out.push(`${name}, its costliest statements while scraped 10/s (calls and exec ms per minute):`, '');
    for (const t of x.fast.top.slice(0, 5))
      out.push(
        `- ${fmt((t.calls * 60) / x.fast.seconds, 1)} calls, ${fmt((t.execMs * 60) / x.fast.seconds, 2)} ms: \`${t.query.slice(0, 110).replace(/`/g, "'")}${t.query.length > 110 ? '…' : ''}\``,
      );
    out.push('');
  }

  out.push(
    `### Database stopped (pg_ctl stop -m fast): ${opts.outageScrapes} sequential scrapes (at most ${OUTAGE_BUDGET_MS / 1000} s; every request capped at ${opts.timeout} s, any status counts as an answer), then the load again: wrk ${opts.outageDuration} s a run, ${opts.rounds} rounds`,
    '',
    '| exporter | body bytes / series / pg_up | sequential: n | p50 ms | p99 ms | max ms | statuses / errors / timeouts |',
    '|---|---:|---:|---:|---:|---:|---|',
  );
  for (const [name, x] of both) {
    if (!x) {
      out.push(`| ${name} | ${NOT_INSTALLED} | | | | | |`);
      continue;
    }
    const s = x.outage.sequential;
    out.push(
      `| ${name} | ${int(s.bytes)} / ${int(s.series)} / ${s.pgUp ?? '–'} | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.max)} | ${statusText(s.statuses)} / ${s.errors} / ${s.timeouts} |`,
    );
  }
  out.push('', ...loadTable(r, { ...opts, duration: opts.outageDuration }, 'outage'), '');
  out.push(
    `pg-maintd noticed the stop (pg_up 0) after ${fmt(r.outage.daemonNoticedS, 1)} s; after the restart it reported pg_up 1 again after ${fmt(r.outage.daemonRecoveredS, 1)} s${r.reference ? `, postgres_exporter after ${fmt(r.outage.referenceRecoveredS, 1)} s` : ''}.`,
    '',
  );

  const disturbed = Object.entries(r.disturbance).filter(([, o]) => o.share > 0.05);
  out.push(
    disturbed.length
      ? `**The machine was not idle**: other processes used more than 5 % of it during ${disturbed.map(([k, o]) => `${k} (${fmt(o.share * 100, 0)} %, ${fmt(o.cpuS, 1)} CPU-s)`).join(', ')}; those numbers are disturbed, run again on a quiet machine.`
      : `Other processes on the machine used at most ${fmt(Math.max(0, ...Object.values(r.disturbance).map((o) => o.share)) * 100, 1)} % of it during any measured phase.`,
    '',
  );
  out.push('### Targets', '', ...r.targets.map((t) => `- ${t}`), '');
  out.push(
    `Latencies in ms: wrk's percentiles under load, per-request times of the sequential scrapes. Per-minute numbers: window total × 60 / window length. pg_stat_statements counts what it tracks: with track_utility on, SET and other utility statements too; its own reset is not in the exporters' roles. Total ${fmt(r.totalS, 0)} s.`,
    '',
  );
  if (r.daemonLog.length)
    out.push(
      `pg-maintd warnings/errors logged during the run: ${r.daemonLog.map((l) => `${l.msg} ×${l.count}`).join('; ')}`,
      '',
    );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  const t0 = performance.now();
  const { nproc, cpu, memGiB, node } = machineFacts();
  const machine = { cpu, cores: nproc, memGiB, node };
  const exporterBin = findExporter(opts.exporter);
  for (const [name, w] of [
    ['--slow-window', opts.slowWindow],
    ['--fast-window', opts.fastWindow],
  ])
    if (w % DAEMON_INTERVAL_S !== 0)
      log(
        `note: ${name} ${w} s is not a multiple of 15 s: pg-maintd's per-minute numbers are off by part of a poll round`,
      );
  const versions = {
    daemon: (await import('../dist/core/version.js')).VERSION,
    code: await codeVersion(),
    exporter: exporterBin ? exporterVersion(exporterBin) : undefined,
    exporterBin,
  };
  log(
    `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memGiB} GiB RAM, node ${machine.node}; pg-maintd ${versions.daemon}; ${exporterBin ? `postgres_exporter ${versions.exporter}` : NOT_INSTALLED}`,
  );

  const work = mkdtempSync(join(tmpdir(), 'pgmaintd-bench-metrics-'));
  onCleanup(() => rmSync(work, { recursive: true, force: true }));

  const cluster = new LocalCluster({ settings: { log_connections: 'on' } });
  onCleanup(() => cluster.stop());
  await cluster.start();
  log(`throwaway cluster (LocalCluster) in ${cluster.dir}, port ${cluster.port}`);
  const passwords = await prepare(cluster);
  const admin = await connect(cluster);
  onCleanup(() => admin.end().catch(() => undefined));
  const setting = async (name) => (await admin.query(`SELECT current_setting($1) AS v`, [name])).rows[0].v;
  machine.pg = `PostgreSQL ${await setting('server_version')}`;
  const settings = {
    track: await setting('pg_stat_statements.track'),
    trackUtility: await setting('pg_stat_statements.track_utility'),
    trackPlanning: await setting('pg_stat_statements.track_planning'),
  };
  log(`${machine.pg}; pg_stat_statements.track=${settings.track}, track_utility=${settings.trackUtility}`);

  const daemon = await startDaemon(cluster, passwords[DAEMON_ROLE], work);
  onCleanup(() => daemon.agent.destroy());
  let reference;
  if (exporterBin) {
    reference = await startExporter(exporterBin, cluster, passwords[EXPORTER_ROLE]);
    onCleanup(() => reference.agent.destroy());
  } else log(NOT_INSTALLED);
  const exporters = [daemon, reference].filter(Boolean);
  // postmasterPid is undefined while the database is stopped
  /** The static-body servers, while they run: ours, not others'. */
  const helpers = new Set();
  const roots = () =>
    [...exporters.map((x) => x.proc.child.pid), ...helpers, postmasterPid(cluster)].filter(Boolean);
  const disturbance = {};
  /** Runs one phase, noting the CPU other processes on the machine used meanwhile. */
  const phase = async (name, fn) => {
    const a = machineCpu(roots);
    const res = await fn();
    const other = othersCpu(a, machineCpu(roots));
    disturbance[name] = other;
    if (other.share > 0.05)
      log(
        `  (other processes used ${fmt(other.cpuS, 1)} CPU-s, ${fmt(other.share * 100, 0)} % of the machine)`,
      );
    return res;
  };
  for (const x of exporters) {
    const text = await waitUp(x);
    x.bytes = Buffer.byteLength(text);
    x.series = seriesCount(text);
    log(`${x.name} up at ${x.url}: ${x.bytes} bytes, ${x.series} series`);
  }

  // 1. Load: pg-maintd against the limit, then the reference
  log(
    `load: wrk ${opts.threads} threads, ${opts.connections} connections, ${opts.rounds} rounds of ${opts.duration} s (limit, pg-maintd) × (plain, gzip), ${opts.warmup} s warm-up each`,
  );
  daemon.load = await againstLimit('load', daemon, work, opts, phase, helpers);
  if (reference) {
    if (opts.warmup > 0)
      await wrk(reference.url, {
        duration: opts.warmup,
        connections: opts.connections,
        threads: opts.threads,
        timeoutS: opts.timeout,
      });
    reference.load = await referenceLoad(reference, opts, opts.duration, phase);
  }

  // 2. Database cost per minute, each exporter on its own
  for (const x of exporters) {
    const role = x === daemon ? DAEMON_ROLE : EXPORTER_ROLE;
    if (x === daemon) {
      const waited = await alignToPolls(daemon);
      log(`${x.name}: waited ${fmt(waited, 1)} s to start half-way between two poll rounds`);
    }
    for (const [key, everyMs, windowS] of [
      ['slow', SLOW_EVERY_MS, opts.slowWindow],
      ['fast', FAST_EVERY_MS, opts.fastWindow],
    ]) {
      log(`${x.name}: database cost, scraped every ${everyMs / 1000} s for ${windowS} s`);
      x[key] = await phase(`cost ${x.name} ${key}`, () =>
        costWindow(admin, cluster, x, role, everyMs, windowS, opts.timeout * 1000),
      );
      const w = x[key];
      log(
        `  ${w.scrapes} scrapes, ${w.queries} queries (${fmt(w.queriesPerMin, 1)}/min), ${fmt(w.execMs, 2)} ms exec (${fmt(w.execMsPerMin, 2)}/min), ${w.connections} new connections`,
      );
    }
    x.costRatio = {
      queries: x.fast.queriesPerMin / x.slow.queriesPerMin,
      exec: x.fast.execMsPerMin / x.slow.execMsPerMin,
    };
  }

  // 3. The database stopped
  const outage = {};
  log('stopping the database (pg_ctl stop -m fast)');
  const tStop = performance.now();
  await cluster.stopServer();
  await waitDown(daemon, (DAEMON_INTERVAL_S + 30) * 1000);
  outage.daemonNoticedS = (performance.now() - tStop) / 1000;
  log(`pg-maintd reports pg_up 0 after ${fmt(outage.daemonNoticedS, 1)} s`);
  for (const x of exporters) {
    log(`${x.name}: ${opts.outageScrapes} sequential scrapes`);
    const sequentialRes = await phase(`outage ${x.name} sequential`, () =>
      sequential(x.url, x.agent, opts.outageScrapes, opts.timeout * 1000, OUTAGE_BUDGET_MS),
    );
    x.outage = { sequential: sequentialRes };
    log(
      `  sequential p50 ${ms(sequentialRes.p50)} ms p99 ${ms(sequentialRes.p99)} ms (${statusText(sequentialRes.statuses)}, ${sequentialRes.errors} errors)`,
    );
  }
  const outageOpts = { ...opts, duration: opts.outageDuration };
  daemon.outage.load = await againstLimit('outage', daemon, work, outageOpts, phase, helpers);
  if (reference) reference.outage.load = await referenceLoad(reference, opts, opts.outageDuration, phase);
  log('starting the database again');
  const tStart = performance.now();
  await cluster.startServer();
  await waitUp(daemon, (DAEMON_INTERVAL_S + 30) * 1000);
  outage.daemonRecoveredS = (performance.now() - tStart) / 1000;
  if (reference) {
    await waitUp(reference, 30_000);
    outage.referenceRecoveredS = (performance.now() - tStart) / 1000;
  }

  // Targets
  const d = daemon;
  const ref = reference;
  const dPlain = d.load.cases['pg-maintd plain'];
  const ratios = ref ? { rps: dPlain.rps / ref.load.rps } : {};
  const rpsOk = ref ? ratios.rps >= 20 : undefined;
  const p99Ok = dPlain.p99 <= 5;
  /** pg-maintd ≥ 0.5 × the limit's req/s with p99 ≤ 5 ms, both medians over the rounds. */
  const limitTarget = (what, res, coding) => {
    const c = res.cases[`pg-maintd ${coding}`];
    const l = res.cases[`limit ${coding}`];
    const ok = c.ofLimit >= 0.5 && c.p99 <= 5 && c.non2xx + c.errors + c.timeouts === 0;
    return `${mark(ok)} — ${what}, ${coding}: pg-maintd ≥ 0.5 × the static-body limit's req/s, p99 ≤ 5 ms, no errors: ${fmt(c.ofLimit, 2)}× (${int(c.rps)} vs ${int(l.rps)} req/s), p99 ${ms(c.p99)} ms (worst round ${ms(c.p99Worst)} ms), ${c.non2xx + c.errors + c.timeouts} non-2xx/errors/timeouts`;
  };
  const costOk =
    d.costRatio.queries <= 1.1 &&
    d.costRatio.exec <= 1.5 &&
    d.fast.connectionsPerMin <= d.slow.connectionsPerMin + 1;
  const outageOk = d.outage.sequential.n > 0 && d.outage.sequential.p99 < 5;
  const targets = [
    limitTarget('database up', d.load, 'plain'),
    limitTarget('database up', d.load, 'gzip'),
    limitTarget('database stopped', d.outage.load, 'plain'),
    limitTarget('database stopped', d.outage.load, 'gzip'),
    `${ref && rpsOk !== undefined ? mark(rpsOk && p99Ok) : `${mark(p99Ok)} (p99 only; ${NOT_INSTALLED})`} — pg-maintd ≥ 20× the reference's req/s with p99 ≤ 5 ms (plain text, wrk): ${ref ? `${fmt(ratios.rps, 1)}× (${int(dPlain.rps)} vs ${int(ref.load.rps)} req/s)` : 'ratio not measured'}, p99 ${ms(dPlain.p99)} ms`,
    `${mark(costOk)} — pg-maintd's database cost does not grow with the scrape rate (10/s vs every 15 s: queries ≤ 1.1×, exec time ≤ 1.5×, new connections/min at most +1): queries ${fmt(d.costRatio.queries, 2)}×, exec time ${fmt(d.costRatio.exec, 2)}×, connections ${fmt(d.slow.connectionsPerMin, 1)} → ${fmt(d.fast.connectionsPerMin, 1)}/min${ref ? ` (postgres_exporter: queries ${fmt(ref.costRatio.queries, 1)}×, exec time ${fmt(ref.costRatio.exec, 1)}×)` : ''}`,
    `${mark(outageOk)} — pg-maintd answers a scrape in < 5 ms (p99 of the sequential scrapes) while the database is stopped: p99 ${ms(d.outage.sequential.p99)} ms (p50 ${ms(d.outage.sequential.p50)}, max ${ms(d.outage.sequential.max)})${ref ? `; postgres_exporter: sequential p99 ${ms(ref.outage.sequential.p99)} ms` : ''}`,
  ];

  // the daemon's own complaints (expected: the collectors failing once during the stop)
  const counts = new Map();
  for (const l of daemon.proc.lines.filter((x) => x.level >= 40))
    counts.set(l.msg, (counts.get(l.msg) ?? 0) + 1);
  const pick = (x) =>
    x && {
      url: x.url,
      bytes: x.bytes,
      series: x.series,
      load: x.load,
      slow: x.slow,
      fast: x.fast,
      costRatio: x.costRatio,
      outage: x.outage,
    };
  const results = {
    at: new Date().toISOString(),
    options: opts,
    machine,
    versions,
    settings,
    daemon: pick(daemon),
    reference: pick(reference),
    referenceNote: reference ? undefined : NOT_INSTALLED,
    ratios,
    outage,
    targets,
    daemonLog: [...counts].map(([msg, count]) => ({ msg, count })),
    disturbance,
    totalS: (performance.now() - t0) / 1000,
  };
  process.stdout.write(render(results, opts));
  if (opts.out) {
    writeFileSync(opts.out, `${JSON.stringify(results, null, 2)}\n`);
    log(`results also in ${opts.out}`);
  }
  const tDaemonStop = performance.now();
  const killed = await stopProcess(daemon.proc);
  const stopS = (performance.now() - tDaemonStop) / 1000;
  if (killed || stopS > 5)
    log(`note: pg-maintd took ${fmt(stopS, 1)} s to stop${killed ? ' and was killed' : ''}`);
}

await runBench(main);
