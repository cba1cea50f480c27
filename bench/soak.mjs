#!/usr/bin/env node
/**
 * `npm run bench:soak`: pg-maintd run for 20 minutes (SOAK_MINUTES) with every collector polling
 * each second, a backup every 2 minutes and a Prometheus-like scrape every 2 s, against a moderate
 * database (256 MiB) in a throwaway cluster. Every 10 s it samples the daemon's memory (its /metrics,
 * and the heap after a forced full GC from bench/daemon-probe.mjs), open file descriptors, threads and
 * database connections. It reports start (after a warm-up) against end and PASS/FAIL for: heap
 * growth under 10 %, no fd growth, no connection growth. Raw samples go to bench/results/.
 * See bench/README.md.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { METRICS_COLLECTORS as COLLECTORS } from '../dist/config/fields.js';
import { LocalCluster } from '../dist/embedded/local-cluster.js';
import {
  CLI,
  MiB,
  PROBE,
  ROOT,
  backupRuns,
  chunkShape,
  cliEnv,
  codeVersion,
  connect,
  ensureDatabase,
  fmt,
  httpGet,
  lateSummary,
  log,
  logMachine,
  median,
  metricSum,
  num,
  onCleanup,
  parseMetrics,
  parseOptions,
  percentile,
  pollUrl,
  reportText,
  runBench,
  setKillWait,
  sh,
  startProcess,
  stopProcess,
} from './lib.mjs';

setKillWait(30_000); // the daemon drains within SHUTDOWN_GRACE_PERIOD (25 s)

const POOL_IDLE_S = 30; // DB_POOL_IDLE_TIMEOUT's default: connections a backup added close after it
const HEAP_GROWTH_LIMIT = 0.1;
const EDGE = 5; // samples at each end that make "start" and "end"
const LAG_SPIKE_MS = 50;

const HELP = `usage: node bench/soak.mjs [options]     (npm run bench:soak -- [options])

  --minutes M         whole run, warm-up included (default 20, env SOAK_MINUTES)
  --warmup-minutes M  warm-up, not compared (default: 2, or a third of a shorter run;
                      env SOAK_WARMUP_MINUTES); it also lasts until the first backup is complete
  --backup-every M    minutes between backups (default 2)
  --db-mb N           database size in MiB (default 256, env SOAK_DB_MB)
  --sample-every S    seconds between samples (default 10)
  --scrape-every S    seconds between the Prometheus-like scrapes (default 2)
  --gc-every S        a forced full GC in the daemon every S seconds (default 10; 0: none, and no
                      --expose-gc)
  --out DIR           where the raw samples go (default bench/results)
  -h, --help          this text
`;

function options() {
  const values = parseOptions(HELP, {
    minutes: { type: 'string' },
    'warmup-minutes': { type: 'string' },
    'backup-every': { type: 'string' },
    'db-mb': { type: 'string' },
    'sample-every': { type: 'string' },
    'scrape-every': { type: 'string' },
    'gc-every': { type: 'string' },
    out: { type: 'string' },
  });
  const minutes = num('minutes', values.minutes ?? process.env.SOAK_MINUTES, 20, 1, 24 * 60);
  const warmup = num(
    'warmup-minutes',
    values['warmup-minutes'] ?? process.env.SOAK_WARMUP_MINUTES,
    Math.min(2, minutes / 3),
    0,
    minutes,
  );
  return {
    minutes,
    warmupMinutes: warmup,
    backupEvery: num('backup-every', values['backup-every'], 2, 1, 60, true),
    dbMb: num('db-mb', values['db-mb'] ?? process.env.SOAK_DB_MB, 256, 16, 64 * 1024),
    sampleEvery: num('sample-every', values['sample-every'], 10, 1, 600),
    scrapeEvery: num('scrape-every', values['scrape-every'], 2, 0.1, 600),
    gcEvery: num('gc-every', values['gc-every'], 10, 0, 3600),
    out: values.out ?? join(ROOT, 'bench', 'results'),
  };
}

/** Every `every` minutes (1-60), the first one at second `at` of a minute at least ~40 s from now. */
function backupCron(every) {
  const at = new Date(Date.now() + 40_000);
  const s = at.getUTCSeconds();
  const first = at.getUTCMinutes() % every;
  return every === 1 ? `${s} * * * * *` : `${s} ${first}-59/${every} * * * *`;
}

function procStatus(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { vmRss: kb('VmRSS') * 1024, threads: Number(/^Threads:\s+(\d+)/m.exec(s)?.[1] ?? NaN) };
  } catch {
    return { vmRss: NaN, threads: NaN };
  }
}

function fdCount(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** Scrapes /metrics every `everyS` seconds (the scrape is skipped when the previous one still runs). */
function scraper(url, everyS) {
  const ms = [];
  let errors = 0;
  const poll = pollUrl(url, everyS * 1000, 10_000, (r) => {
    ms.push(r.ms);
    if (!r.ok) errors++;
  });
  return {
    async stop() {
      await poll.stop();
      return { n: ms.length, errors, ms };
    },
  };
}

async function main() {
  const opts = options();
  const t0 = performance.now();
  const { facts, loadAtStart } = logMachine();
  log(
    `soak: ${opts.minutes} min (warm-up ${fmt(opts.warmupMinutes, 1)} min), every collector every 1 s, a backup every ${opts.backupEvery} min, a scrape every ${opts.scrapeEvery} s, samples every ${opts.sampleEvery} s`,
  );
  const work = mkdtempSync(join(tmpdir(), 'pgmaintd-bench-soak-'));
  onCleanup(() => rmSync(work, { recursive: true, force: true }));

  // A throwaway cluster (pg_stat_statements preloaded), with a moderate database of the same data
  const cluster = new LocalCluster({ settings: { shared_buffers: "'128MB'", max_wal_size: "'2GB'" } });
  onCleanup(() => cluster.stop());
  await cluster.start();
  log(`throwaway cluster (LocalCluster) in ${cluster.dir}, port ${cluster.port}`);
  const target = opts.dbMb * MiB;
  const db = `bench_${opts.dbMb}mb`;
  const dbBytes = await ensureDatabase(cluster, db, target, chunkShape(target));
  const admin = await connect(cluster, db);
  onCleanup(() => admin.end().catch(() => undefined));
  await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  await admin.query("SET application_name = 'pgmaintd-bench-soak'");
  const pgVersion = (await sh('pg_dump', ['--version'])).trim();
  const code = await codeVersion();

  const probeFile = join(work, 'probe.jsonl');
  const cron = backupCron(opts.backupEvery);
  const nodeArgs = [...(opts.gcEvery > 0 ? ['--expose-gc'] : []), '--import', PROBE, CLI, 'run'];
  const proc = startProcess(process.execPath, nodeArgs, {
    sampleMs: 1000,
    env: cliEnv(cluster, db, {
      BACKUP_DIR: join(work, 'backups'),
      BACKUP_SCHEDULE: cron,
      SCHEDULE_TZ: 'UTC',
      BACKUP_VERIFY_SCHEDULE: 'off',
      MAINTENANCE_SCHEDULE: 'off',
      // the generated tables have no migration history; start-up would refuse to adopt them
      MIGRATE_ON_START: 'false',
      METRICS_INTERVAL: '1s',
      METRICS_COLLECTOR_INTERVALS: COLLECTORS.map((c) => `${c}=1s`).join(','),
      METRICS_DATABASE_SIZE_INTERVAL: '1s',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      PGMAINTD_BENCH_PROBE: probeFile,
      PGMAINTD_BENCH_GC_EVERY_MS: String(opts.gcEvery * 1000),
    }),
  });
  const pid = proc.child.pid;
  const listening = await proc.waitForLog((l) => l.msg === 'http server listening');
  await proc.waitForLog((l) => l.msg === 'pg-maintd started', 5 * 60_000);
  const url = `http://127.0.0.1:${listening.line.address.port}/metrics`;
  const started = Date.now();
  const endAt = started + opts.minutes * 60_000;
  log(
    `pg-maintd run (pid ${pid}) at ${url}, BACKUP_SCHEDULE='${cron}'; until ${new Date(endAt).toISOString()}`,
  );

  const scrapes = scraper(url, opts.scrapeEvery);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const samples = [];
  let lastLog = 0;
  while (Date.now() < endAt) {
    const t = Date.now();
    if (proc.child.exitCode !== null || proc.child.signalCode !== null)
      throw new Error(`pg-maintd exited during the soak:\n${proc.stdout.slice(-3000)}${proc.stderr}`);
    const r = await httpGet(url, agent, 10_000);
    const m = r.ok ? parseMetrics(r.body.toString('utf8')) : {};
    const act = await admin
      .query(
        `SELECT count(*) FILTER (WHERE application_name LIKE 'pg-maintd%')::int AS daemon,
                count(*) FILTER (WHERE application_name = 'pg_dump')::int AS pg_dump
           FROM pg_stat_activity WHERE pid <> pg_backend_pid()`,
      )
      .then((q) => q.rows[0]);
    const st = procStatus(pid);
    const s = {
      t,
      elapsedS: Math.round((t - started) / 1000),
      ok: r.ok,
      rss: metricSum(m, 'process_resident_memory_bytes'),
      vmRss: st.vmRss,
      heapUsed: metricSum(m, 'nodejs_heap_size_used_bytes'),
      heapTotal: metricSum(m, 'nodejs_heap_size_total_bytes'),
      external: metricSum(m, 'nodejs_external_memory_bytes'),
      fds: fdCount(pid),
      openFdsMetric: metricSum(m, 'process_open_fds'),
      threads: st.threads,
      connections: act.daemon,
      pgDumpConnections: act.pg_dump,
      poolClients: metricSum(m, 'pgmaintd_db_pool_clients', 'state="total"'),
      backupsOk: metricSum(m, 'pgmaintd_backup_runs_total', 'result="success"') || 0,
      backupsFailed: metricSum(m, 'pgmaintd_backup_runs_total', 'result="failure"') || 0,
      backupInProgress: metricSum(m, 'pgmaintd_backup_in_progress'),
      collectorsFailing: (m.pg_scrape_collector_success ?? []).filter((x) => x.value !== 1).length,
    };
    samples.push(s);
    if (t - lastLog >= 60_000) {
      lastLog = t;
      log(
        `  ${fmt(s.elapsedS / 60, 1)} min: RSS ${fmt(s.rss / MiB, 1)} MiB, heap ${fmt(s.heapUsed / MiB, 1)} MiB, ${s.fds} fds, ${s.threads} threads, ${s.connections} connections, backups ${s.backupsOk} ok / ${s.backupsFailed} failed`,
      );
    }
    await sleep(Math.max(0, opts.sampleEvery * 1000 - (Date.now() - t)));
  }
  agent.destroy();
  const scraped = await scrapes.stop();
  const loadAtEnd = loadavg();
  const runs = backupRuns(proc.lines);
  const killed = await stopProcess(proc);

  // the probe's file: lag samples every second, heap after each forced GC
  const gcSamples = [];
  const lagSeconds = [];
  for (const line of readFileSync(probeFile, 'utf8').split('\n')) {
    if (!line) continue;
    const x = JSON.parse(line);
    if (x.gc) gcSamples.push({ t: x.t, elapsedS: Math.round((x.t - started) / 1000), ...x.gc });
    if (x.lag && x.t > started && x.t <= endAt) lagSeconds.push(x);
  }

  // ---------------------------------------------------------------------------------------------
  // Analysis: warm-up end; "steady" moments (no backup running or just finished)
  // ---------------------------------------------------------------------------------------------
  const complete = runs.filter((r) => r.ok);
  const failedRuns = runs.filter((r) => r.end !== undefined && !r.ok);
  const firstDone = complete[0]?.end ?? Infinity;
  const warmEnd = Math.max(started + opts.warmupMinutes * 60_000, firstDone);
  const busyAt = (t) =>
    runs.some((r) => t >= r.start - 2000 && t <= (r.end ?? Infinity) + (POOL_IDLE_S + 10) * 1000);
  const post = samples.filter((s) => s.t >= warmEnd && s.ok);
  const lagPost = lagSeconds.filter((x) => x.t >= warmEnd);
  const lagSorted = Float64Array.from(lagPost.flatMap((x) => x.lag)).sort();
  const late = lateSummary(lagPost.flatMap((x) => x.late ?? []));
  const lagSpikes = lagSeconds
    .map((x) => ({
      t: x.t,
      elapsedS: Math.round((x.t - started) / 1000),
      maxMs: Math.max(0, ...x.lag),
      late: x.late,
    }))
    .filter((x) => x.maxMs >= LAG_SPIKE_MS);
  const duringBackup = (t) => runs.some((r) => t >= r.start - 2000 && t <= (r.end ?? Infinity) + 2000);
  const steady = post.filter((s) => !busyAt(s.t));
  const gcPost = gcSamples.filter((g) => g.t >= warmEnd && !busyAt(g.t));
  const edges = (xs) => {
    const k = Math.min(EDGE, Math.floor(xs.length / 2));
    return { k, first: xs.slice(0, k), last: xs.slice(xs.length - k) };
  };
  const stat = (xs, key, scale = 1) => {
    const { k, first, last } = edges(xs);
    const vals = xs.map((x) => x[key]).filter(Number.isFinite);
    return {
      k,
      start: k ? median(first.map((x) => x[key])) / scale : NaN,
      end: k ? median(last.map((x) => x[key])) / scale : NaN,
      min: vals.length ? Math.min(...vals) / scale : NaN,
      max: vals.length ? Math.max(...vals) / scale : NaN,
    };
  };
  const rows = [
    ['RSS, MiB (/metrics process_resident_memory_bytes)', stat(steady, 'rss', MiB), 1],
    ['heap used, MiB (/metrics nodejs_heap_size_used_bytes)', stat(steady, 'heapUsed', MiB), 1],
    ...(gcSamples.length
      ? [
          ['heap used after a forced full GC, MiB', stat(gcPost, 'heapUsed', MiB), 1],
          ['external + array buffers after GC, MiB', stat(gcPost, 'external', MiB), 1],
        ]
      : []),
    ['heap total, MiB (/metrics nodejs_heap_size_total_bytes)', stat(steady, 'heapTotal', MiB), 1],
    ['open fds (/proc/<pid>/fd)', stat(steady, 'fds'), 0],
    ['threads (/proc/<pid>/status)', stat(steady, 'threads'), 0],
    ["connections (pg_stat_activity, application_name 'pg-maintd%')", stat(steady, 'connections'), 0],
    ['pool clients (pgmaintd_db_pool_clients, total)', stat(steady, 'poolClients'), 0],
  ];
  const all = (key, scale = 1) => {
    const v = post.map((s) => s[key]).filter(Number.isFinite);
    return v.length
      ? `${fmt(Math.min(...v) / scale, scale === 1 ? 0 : 1)}–${fmt(Math.max(...v) / scale, scale === 1 ? 0 : 1)}`
      : '–';
  };
  const heapRow = gcSamples.length ? rows[2][1] : rows[1][1];
  const heapGrowth = heapRow.end / heapRow.start - 1;
  const fdRow = rows.find((r) => r[0].startsWith('open fds'))[1];
  const connRow = rows.find((r) => r[0].startsWith('connections'))[1];
  const poolRow = rows.find((r) => r[0].startsWith('pool clients'))[1];
  const threadRow = rows.find((r) => r[0].startsWith('threads'))[1];
  const last = samples[samples.length - 1];
  const mark = (ok, k) =>
    k === 0
      ? 'NOT ENOUGH DATA'
      : `${ok ? 'PASS' : 'FAIL'}${k === 1 ? ' (one sample at each end: a trial, not conclusive)' : ''}`;
  const pct = (x) => `${x >= 0 ? '+' : ''}${fmt(x * 100, 1)} %`;

  const table = [
    `| measure | start | end | change | min | max | all samples after warm-up (min–max) |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(([name, r, d]) => {
      const change =
        d === 0 ? `${r.end - r.start >= 0 ? '+' : ''}${fmt(r.end - r.start, 0)}` : pct(r.end / r.start - 1);
      const key = {
        'RSS, MiB (/metrics process_resident_memory_bytes)': ['rss', MiB],
        'heap used, MiB (/metrics nodejs_heap_size_used_bytes)': ['heapUsed', MiB],
        'heap total, MiB (/metrics nodejs_heap_size_total_bytes)': ['heapTotal', MiB],
        'open fds (/proc/<pid>/fd)': ['fds', 1],
        'threads (/proc/<pid>/status)': ['threads', 1],
        "connections (pg_stat_activity, application_name 'pg-maintd%')": ['connections', 1],
        'pool clients (pgmaintd_db_pool_clients, total)': ['poolClients', 1],
      }[name];
      return `| ${name} | ${fmt(r.start, d)} | ${fmt(r.end, d)} | ${change} | ${fmt(r.min, d)} | ${fmt(r.max, d)} | ${key ? all(key[0], key[1]) : '–'} |`;
    }),
  ];
  const durations = complete.map((r) => r.durationS).sort((a, b) => a - b);
  const details = [
    `run: ${fmt((endAt - started) / 60_000, 1)} min of pg-maintd run; warm-up until ${fmt((warmEnd - started) / 60_000, 1)} min (${fmt(opts.warmupMinutes, 1)} min and the first complete backup); ${samples.length} samples every ${opts.sampleEvery} s, ${post.length} after the warm-up, ${steady.length} of them steady; ${gcSamples.length} forced-GC samples (${gcPost.length} steady after the warm-up)`,
    `start / end: the median of the first / last ${EDGE} steady samples after the warm-up (fewer when there are not 2 × ${EDGE}). Steady = no backup running and none finished in the last ${POOL_IDLE_S + 10} s (a backup opens pg_dump's pipes, its output file, compression threads and connections; the pool closes the extra ones after DB_POOL_IDLE_TIMEOUT, ${POOL_IDLE_S} s), so start and end compare the same state. min / max: over the steady samples; the last column: over every sample after the warm-up, backups included`,
    `heap: V8's used heap moves by several MiB between collections, so a single reading says little; ${gcSamples.length ? `the growth target uses the heap right after a full GC that bench/daemon-probe.mjs forces every ${opts.gcEvery} s inside the daemon (node --expose-gc, no product code involved): only what is still reachable` : 'the growth target uses the median of /metrics readings (run with --gc-every N for post-GC values)'}`,
    `backups: BACKUP_SCHEDULE='${cron}' (UTC), to a local BACKUP_DIR, defaults otherwise; ${runs.length} started, ${complete.length} complete, ${failedRuns.length} failed${failedRuns.length ? ` (${failedRuns.map((r) => r.error).join('; ')})` : ''}; durations min / median / max ${fmt(durations[0], 1)} / ${fmt(median(durations), 1)} / ${fmt(durations[durations.length - 1], 1)} s${complete[0] ? ` (${fmt(complete[0].bytes / 1e6, 1)} MB compressed)` : ''}; counters at the end: ${last?.backupsOk} ok, ${last?.backupsFailed} failed`,
    `collectors: all ${COLLECTORS.length} every 1 s (METRICS_INTERVAL=1s, METRICS_COLLECTOR_INTERVALS, METRICS_DATABASE_SIZE_INTERVAL=1s); samples with a failing collector: ${samples.filter((s) => s.collectorsFailing > 0).length}`,
    `scrapes: ${scraped.n} every ${opts.scrapeEvery} s, ${scraped.errors} failed, p99 ${fmt(percentile(Float64Array.from(scraped.ms).sort(), 99))} ms, max ${fmt(Math.max(...scraped.ms))} ms; the sampler's own ${samples.length} scrapes: ${samples.filter((s) => !s.ok).length} failed`,
    `event-loop lag inside the daemon after the warm-up (10 ms timer, the forced GCs included): p99 ${fmt(percentile(lagSorted, 99))} ms, max ${fmt(lagSorted[lagSorted.length - 1])} ms; ticks at least 20 ms late: ${late.n ? `${late.n}, the main thread running for ${fmt(late.ownShare * 100, 0)} % of those delays (own work), waiting for a core the rest` : 'none'}. Seconds of the whole run with a tick ${LAG_SPIKE_MS} ms or more late: ${lagSpikes.length}, ${lagSpikes.filter((x) => duringBackup(x.t)).length} of them while a backup ran${
      lagSpikes.length
        ? ` (${lagSpikes
            .slice(0, 10)
            .map((x) => `${x.elapsedS} s: ${fmt(x.maxMs, 0)} ms`)
            .join(', ')}${lagSpikes.length > 10 ? ', …' : ''})`
        : ''
    }`,
    `connections: pg_dump's own session (application_name pg_dump) is counted apart: at most ${Math.max(...samples.map((s) => s.pgDumpConnections))} in the samples (a backup is short, samples are 10 s apart). Threads: the compression runs on libuv's thread pool, which exists from the start`,
    `machine: ${facts.nproc} cores (${facts.cpu}), ${facts.memGiB} GiB RAM, node ${facts.node}, ${pgVersion}; database ${db} ${fmt(dbBytes / MiB, 0)} MiB; load average at the start ${loadAtStart.map((v) => v.toFixed(2)).join(' ')}, at the end ${loadAtEnd.map((v) => v.toFixed(2)).join(' ')}; code ${code}; total ${fmt((performance.now() - t0) / 1000, 0)} s${killed ? '; the daemon had to be killed at the end' : ''}`,
  ];
  const targets = [
    `- ${mark(heapGrowth < HEAP_GROWTH_LIMIT, heapRow.k)} — heap growth after the warm-up under ${HEAP_GROWTH_LIMIT * 100} %: ${fmt(heapRow.start, 1)} → ${fmt(heapRow.end, 1)} MiB, ${pct(heapGrowth)} (${gcSamples.length ? 'after forced GC' : '/metrics medians'})`,
    `- ${mark(fdRow.end <= fdRow.start, fdRow.k)} — no fd growth: ${fmt(fdRow.start, 0)} → ${fmt(fdRow.end, 0)} (steady min ${fmt(fdRow.min, 0)}, max ${fmt(fdRow.max, 0)}); threads ${fmt(threadRow.start, 0)} → ${fmt(threadRow.end, 0)}`,
    `- ${mark(connRow.end <= connRow.start && poolRow.end <= poolRow.start, connRow.k)} — no connection growth: pg_stat_activity ${fmt(connRow.start, 0)} → ${fmt(connRow.end, 0)}, pool clients ${fmt(poolRow.start, 0)} → ${fmt(poolRow.end, 0)}`,
    `- ${failedRuns.length === 0 && complete.length > 0 ? 'PASS' : 'FAIL'} — every backup succeeded: ${complete.length} complete, ${failedRuns.length} failed`,
  ];
  const text = reportText(
    `## pg-maintd soak (${new Date(started).toISOString().slice(0, 16)}Z, ${fmt(opts.minutes, 0)} min)`,
    table,
    details,
    targets,
  );

  mkdirSync(opts.out, { recursive: true });
  const stamp = new Date(started).toISOString().slice(0, 19).replace(/[:]/g, '');
  const base = join(opts.out, `soak-${stamp}`);
  writeFileSync(
    `${base}.json`,
    `${JSON.stringify({ facts, pgVersion, code, opts, cron, db, dbBytes, started, warmEnd, endAt, loadAtStart, loadAtEnd, samples, gcSamples, lagSpikes, backups: runs, report: text }, null, 1)}\n`,
  );
  const cols = Object.keys(samples[0] ?? {});
  writeFileSync(
    `${base}.csv`,
    `${cols.join(',')}\n${samples.map((s) => cols.map((c) => s[c]).join(',')).join('\n')}\n`,
  );
  process.stdout.write(text);
  log(`raw samples: ${base}.json (samples, forced-GC samples, backups) and ${base}.csv`);
}

await runBench(main);
