#!/usr/bin/env node
/**
 * `npm run bench:load`: GET /metrics at the highest rate autocannon gets (loopback, 4 connections,
 * 60 s) while pg-maintd backs up a 2 GiB database (its own scheduled backups, pg_dump → parallel gzip
 * → a local BACKUP_DIR, back to back so they cover the whole window), and the same load on an idle
 * daemon as the baseline, in one run. Reports requests/s, latency percentiles, errors, and the
 * daemon's event-loop lag measured inside the daemon (bench/daemon-probe.mjs, preloaded with
 * --import). The database is the one bench:backup generates, reused from BENCH_DIR.
 * See bench/README.md.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import {
  CLI,
  GiB,
  MiB,
  PROBE,
  backupRuns,
  cannon,
  chunkShape,
  cliEnv,
  codeVersion,
  coverage,
  cpuSeconds,
  dumpedWithin,
  ensureDatabase,
  fmt,
  fmtGiB,
  lateSummary,
  log,
  logMachine,
  machineCpu,
  metricSum,
  num,
  onCleanup,
  othersCpu,
  parseMetrics,
  parseOptions,
  percentile,
  pollUrl,
  postmasterPid,
  reportText,
  runBench,
  setKillWait,
  sh,
  startCluster,
  startProcess,
  stopProcess,
  warmCache,
} from './lib.mjs';

setKillWait(30_000); // the daemon drains within SHUTDOWN_GRACE_PERIOD (25 s)

const TARGET_P99_MS = 20;
const TARGET_LAG_P99_MS = 50;
const MIN_COVERAGE = 0.95; // share of the window a backup must be running for the busy phase to count

const HELP = `usage: node bench/load.mjs [options]     (npm run bench:load -- [options])

  --gb N           database size in GiB (pg_database_size), default 2 (env BENCH_DB_GB)
  --dir PATH       the reusable cluster of bench:backup, default /tmp/pgmaintd-bench (env BENCH_DIR)
  --duration S     measured autocannon run per phase, seconds (default 60, env LOAD_DURATION)
  --connections N  autocannon connections (default 4, env LOAD_CONNECTIONS)
  --warmup S       autocannon warm-up before each measured run, not reported (default 5)
  --timeout S      time limit of every request (default 10)
  --compression-threads N  BACKUP_COMPRESSION_THREADS of the daemon (default: unset, one per core)
  --finish-timeout S  after the load, how long the backup in flight may take to finish (default 600)
  --out FILE       also write the results as JSON to FILE
  -h, --help       this text
`;

function options() {
  const values = parseOptions(HELP, {
    gb: { type: 'string' },
    dir: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    warmup: { type: 'string' },
    timeout: { type: 'string' },
    'finish-timeout': { type: 'string' },
    'compression-threads': { type: 'string' },
    out: { type: 'string' },
  });
  return {
    gb: num('gb', values.gb ?? process.env.BENCH_DB_GB, 2, 0.01, 1024),
    dir: values.dir ?? process.env.BENCH_DIR ?? '/tmp/pgmaintd-bench',
    duration: num('duration', values.duration ?? process.env.LOAD_DURATION, 60, 1, 3600),
    connections: num('connections', values.connections ?? process.env.LOAD_CONNECTIONS, 4, 1, 1000, true),
    warmup: num('warmup', values.warmup, 5, 0, 600),
    timeout: num('timeout', values.timeout, 10, 1, 600),
    compressionThreads:
      values['compression-threads'] === undefined
        ? undefined
        : num('compression-threads', values['compression-threads'], 0, 0, 256, true),
    finishTimeout: num('finish-timeout', values['finish-timeout'], 600, 0, 24 * 3600),
    out: values.out,
  };
}

// ---------------------------------------------------------------------------------------------
// The daemon, with the probe preloaded
// ---------------------------------------------------------------------------------------------

/** pg-maintd run with the probe; `schedule` is BACKUP_SCHEDULE ('off' for the idle baseline). */
async function startDaemon(cluster, db, work, name, schedule, compressionThreads) {
  const probeFile = join(work, `probe-${name}.jsonl`);
  const backupDir = join(work, `backups-${name}`);
  const proc = startProcess(process.execPath, ['--import', PROBE, CLI, 'run'], {
    sampleMs: 200,
    env: cliEnv(cluster, db, {
      BACKUP_DIR: backupDir,
      BACKUP_SCHEDULE: schedule,
      SCHEDULE_TZ: 'UTC',
      BACKUP_VERIFY_SCHEDULE: 'off',
      MAINTENANCE_SCHEDULE: 'off',
      // the generated tables have no migration history; start-up would refuse to adopt them
      MIGRATE_ON_START: 'false',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      PGMAINTD_BENCH_PROBE: probeFile,
      ...(compressionThreads === undefined ? {} : { BACKUP_COMPRESSION_THREADS: String(compressionThreads) }),
    }),
  });
  const listening = await proc.waitForLog((l) => l.msg === 'http server listening');
  await proc.waitForLog((l) => l.msg === 'pg-maintd started', 5 * 60_000);
  const url = `http://127.0.0.1:${listening.line.address.port}/metrics`;
  return { proc, url, probeFile, backupDir, pid: proc.child.pid };
}

/** The probe's lag samples (ms) of the seconds that ended within [from, to] (Date.now() times). */
function probeLag(file, from, to) {
  const perSecond = [];
  const late = [];
  if (!existsSync(file)) return { all: [], perSecond, late };
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const x = JSON.parse(line);
    if (!x.lag || x.t <= from || x.t > to) continue;
    perSecond.push(x.lag);
    if (x.late) late.push(...x.late);
  }
  return { all: perSecond.flat(), perSecond, late };
}

/** Scrapes /metrics once a second on its own connection: prom-client's own event-loop gauges. */
function gaugeScraper(url, timeoutMs) {
  const seen = { p99: [], max: [], errors: 0, n: 0 };
  const poll = pollUrl(url, 1000, timeoutMs, (r) => {
    seen.n++;
    if (!r.ok) seen.errors++;
    else {
      const p = parseMetrics(r.body.toString('utf8'), [
        'nodejs_eventloop_lag_p99_seconds',
        'nodejs_eventloop_lag_max_seconds',
      ]);
      seen.p99.push(metricSum(p, 'nodejs_eventloop_lag_p99_seconds') * 1000);
      seen.max.push(metricSum(p, 'nodejs_eventloop_lag_max_seconds') * 1000);
    }
  });
  return {
    async stop() {
      await poll.stop();
      return seen;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One phase: warm-up, then autocannon + the gauge scraper for `duration` seconds
// ---------------------------------------------------------------------------------------------

async function measure(daemon, opts, postmaster, label) {
  const load = { connections: opts.connections, timeoutS: opts.timeout };
  if (opts.warmup > 0) await cannon(daemon.url, { ...load, duration: opts.warmup });
  const roots = () => [daemon.pid, postmaster];
  const cpu0 = machineCpu(roots);
  const daemonCpu0 = cpuSeconds(daemon.pid);
  const self0 = cpuSeconds('self');
  const load0 = loadavg();
  const from = Date.now();
  const scraper = gaugeScraper(daemon.url, opts.timeout * 1000);
  const res = await cannon(daemon.url, { ...load, duration: opts.duration });
  const gauge = await scraper.stop();
  const to = Date.now();
  const cpu1 = machineCpu(roots);
  const lag = probeLag(daemon.probeFile, from, to);
  const lagSorted = Float64Array.from(lag.all).sort();
  const perSecondP99 = lag.perSecond.map((xs) => percentile(Float64Array.from(xs).sort(), 99));
  const x = {
    label,
    from,
    to,
    ...res,
    lag: {
      n: lagSorted.length,
      p50: percentile(lagSorted, 50),
      p99: percentile(lagSorted, 99),
      max: lagSorted.length ? lagSorted[lagSorted.length - 1] : NaN,
      maxPerSecondP99: Math.max(...perSecondP99),
      seconds: lag.perSecond.length,
      late: lateSummary(lag.late),
    },
    gauge: {
      n: gauge.n,
      errors: gauge.errors,
      maxP99: Math.max(...gauge.p99),
      medianP99: percentile(Float64Array.from(gauge.p99).sort(), 50),
      maxMax: Math.max(...gauge.max),
    },
    daemonCores: (cpuSeconds(daemon.pid) - daemonCpu0) / ((to - from) / 1000),
    generatorCores: (cpuSeconds('self') - self0) / ((to - from) / 1000),
    other: othersCpu(cpu0, cpu1),
    loadavg: { before: load0, after: loadavg() },
    rssMiB: daemon.proc.sampler.rootMiB,
  };
  x.failed = x.non2xx + x.errors + x.gauge.errors; // autocannon's errors include its timeouts
  log(
    `  ${fmt(x.rps, 0)} req/s, p50 ${fmt(x.p50)} ms, p99 ${fmt(x.p99)} ms, p99.9 ${fmt(x.p999)} ms, max ${fmt(x.max)} ms, ${x.non2xx} non-2xx, ${x.errors} errors (${x.timeouts} timeouts); event-loop lag p99 ${fmt(x.lag.p99)} ms, max ${fmt(x.lag.max)} ms; load average ${x.loadavg.after.map((v) => v.toFixed(2)).join(' ')}`,
  );
  return x;
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  const t0 = performance.now();
  const { facts, loadAtStart } = logMachine();
  const work = mkdtempSync(join(tmpdir(), 'pgmaintd-bench-load-'));
  onCleanup(() => rmSync(work, { recursive: true, force: true }));

  const cluster = await startCluster({ dir: opts.dir, fresh: false });
  const full = Math.round(opts.gb * GiB);
  const mb = (b) => `${Math.round(b / MiB)}mb`;
  const db = `bench_${mb(full)}`;
  // a half-size database left by bench:backup is the quickest start, as there
  const dbBytes = await ensureDatabase(cluster, db, full, chunkShape(full), `bench_${mb(full / 2)}`);
  await warmCache(cluster, db);
  const postmaster = postmasterPid(cluster);
  if (!postmaster) throw new Error(`no postmaster.pid in ${cluster.dataDir}: is the cluster running?`);
  const pgVersion = (await sh('pg_dump', ['--version'])).trim();
  const code = await codeVersion();

  // 1. Baseline: the same daemon configuration without backups
  log(`idle daemon (BACKUP_SCHEDULE=off): ${opts.warmup} s warm-up, then ${opts.duration} s of load`);
  let daemon = await startDaemon(cluster, db, work, 'idle', 'off', opts.compressionThreads);
  const idle = await measure(daemon, opts, postmaster, 'idle');
  await stopProcess(daemon.proc);

  // 2. The same load during backups: a tick every second, so the next backup starts within a second
  // of the previous one's end (a tick that finds one running is skipped)
  log(`daemon with BACKUP_SCHEDULE='* * * * * *' (back-to-back backups to a local directory)`);
  daemon = await startDaemon(cluster, db, work, 'busy', '* * * * * *', opts.compressionThreads);
  await daemon.proc.waitForLog((l) => l.job === 'backup' && l.msg === 'backup started', 5 * 60_000);
  log(`  backup started; ${opts.warmup} s warm-up, then ${opts.duration} s of load`);
  const busy = await measure(daemon, opts, postmaster, 'backup');
  busy.coverage = coverage(backupRuns(daemon.proc.lines), busy.from, busy.to);
  // the backup in flight finishes without load, so its duration is known; then the daemon stops
  // (a backup the next tick started meanwhile is aborted)
  const running = backupRuns(daemon.proc.lines).filter((r) => r.end === undefined);
  if (running.length) {
    log(`  load stopped; waiting for the backup in flight to finish (at most ${opts.finishTimeout} s)`);
    const ids = new Set(daemon.proc.lines.filter((l) => l.msg === 'backup started').map((l) => l.runId));
    const lastId = [...ids].pop();
    await daemon.proc
      .waitForLog(
        (l) => l.runId === lastId && (l.msg === 'backup complete' || /^backup failed/.test(l.msg)),
        opts.finishTimeout * 1000,
      )
      .catch((err) => log(`  ${err.message.split('\n')[0]}; stopping it`));
  }
  const runs = backupRuns(daemon.proc.lines).filter((r) => r.start < busy.to);
  busy.runs = runs;
  busy.dumpMBps = dumpedWithin(runs, busy.from, busy.to) / 1e6 / ((busy.to - busy.from) / 1000);
  const killed = await stopProcess(daemon.proc);
  const finished = runs.filter((r) => r.end !== undefined);
  const complete = finished.filter((r) => r.ok);
  const failed = finished.filter((r) => !r.ok);
  const inWindow = runs.filter((r) => r.start < busy.to && (r.end ?? Infinity) > busy.from);
  log(
    `  ${runs.length} backups started, ${complete.length} complete (${complete.map((r) => fmt(r.durationS, 1)).join(', ')} s), ${failed.length} failed; ${fmt(busy.coverage * 100, 1)} % of the window covered, ${fmt(busy.dumpMBps, 1)} MB/s of dump during it`,
  );

  // ---------------------------------------------------------------------------------------------
  // Report
  // ---------------------------------------------------------------------------------------------
  const ms = (v) => fmt(v, 2);
  const lateText = (l) =>
    l.n
      ? `${l.n}, ${l.n50} of them 50 ms or more; the main thread was running for ${fmt(l.ownShare * 100, 0)} % of those delays (its own work: JS, GC, a synchronous call), waiting for a core the rest`
      : 'none';
  const la = (x) => x.loadavg.after.map((v) => v.toFixed(2)).join(' ');
  const row = (name, x) =>
    `| ${name} | ${fmt(x.rps, 0)} | ${ms(x.p50)} | ${ms(x.p99)} | ${ms(x.p999)} | ${ms(x.max)} | ${x.non2xx} / ${x.errors} / ${x.timeouts} | ${ms(x.lag.p50)} / ${ms(x.lag.p99)} / ${ms(x.lag.max)} | ${ms(x.lag.maxPerSecondP99)} | ${fmt(x.daemonCores)} | ${la(x)} |`;
  const ratio = (a, b) => (b > 0 ? `${fmt(a / b)}×` : '–');
  const table = [
    '| phase | req/s | p50 ms | p99 ms | p99.9 ms | max ms | non-2xx / errors / timeouts | event-loop lag p50 / p99 / max ms | lag: max of per-second p99s ms | daemon CPU (cores) | load average after (1/5/15 min) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    row('idle daemon (no backup)', idle),
    row('during backups', busy),
    `| during backups ÷ idle | ${ratio(busy.rps, idle.rps)} | ${ratio(busy.p50, idle.p50)} | ${ratio(busy.p99, idle.p99)} | ${ratio(busy.p999, idle.p999)} | ${ratio(busy.max, idle.max)} | | ${ratio(busy.lag.p50, idle.lag.p50)} / ${ratio(busy.lag.p99, idle.lag.p99)} / ${ratio(busy.lag.max, idle.lag.max)} | ${ratio(busy.lag.maxPerSecondP99, idle.lag.maxPerSecondP99)} | ${ratio(busy.daemonCores, idle.daemonCores)} | |`,
  ];
  const disturbed = [idle, busy].some((x) => x.other.share > 0.05);
  const valid = busy.coverage >= MIN_COVERAGE;
  const mark = (ok) => (ok ? 'PASS' : 'FAIL');
  const details = [
    `load: autocannon (its programmatic API, in this process), ${opts.connections} connections, keep-alive, GET /metrics without compression, ${opts.warmup} s warm-up (not reported), then ${opts.duration} s; every request capped at ${opts.timeout} s. Latencies from autocannon's per-response times (its own histogram rounds to whole ms); errors = socket errors including timeouts, plus the 1 Hz side scraper's failed requests`,
    `backups: ${db} (${fmtGiB(dbBytes)} GiB), BACKUP_SCHEDULE='* * * * * *' (ticks that find a backup running are skipped), to a local BACKUP_DIR, compression level 6, ${opts.compressionThreads === undefined ? 'one thread per core (defaults)' : `BACKUP_COMPRESSION_THREADS=${opts.compressionThreads}`}. ${runs.length} started, ${complete.length} complete, ${failed.length} failed${failed.length ? ` (${failed.map((r) => r.error).join('; ')})` : ''}; ${inWindow.length} overlapped the window, covering ${fmt(busy.coverage * 100, 1)} % of it (the gaps: retention and the manifest, then up to 1 s to the next tick). During the window the backups streamed ${fmt(busy.dumpMBps, 1)} MB/s of dump (from their progress lines). Durations: ${complete.map((r) => `${fmt(r.durationS, 1)} s (${fmt(r.raw / 1e6 / r.durationS, 1)} MB/s${r.end > busy.to ? `, its last ${fmt((r.end - busy.to) / 1000, 0)} s after the load stopped` : ''})`).join(', ') || '–'}${complete.length ? `, ${fmt(complete[0].raw / 1e6, 0)} MB of dump, ${fmt(complete[0].bytes / 1e6, 0)} MB compressed` : ''}${killed ? '; the daemon had to be killed at the end' : ''}`,
    `event-loop lag: measured inside the daemon by bench/daemon-probe.mjs (preloaded with node --import; no product code involved): a 10 ms timer, each tick's lateness recorded (${idle.lag.n} / ${busy.lag.n} samples); p50/p99/max over the whole window, and the largest p99 of any single second. Ticks at least 20 ms late: idle ${lateText(idle.lag.late)}; during backups ${lateText(busy.lag.late)}`,
    `prom-client's own gauges, read once a second on a separate connection (for information only: prom-client resets its histogram at every scrape, so under autocannon each reading covers the millisecond or less since the previous request, one or two of its 10 ms samples, each the time between two ticks, i.e. 10 ms + lag: a single reading, not a p99 of anything): nodejs_eventloop_lag_p99_seconds median ${ms(idle.gauge.medianP99)} / ${ms(busy.gauge.medianP99)} ms, max ${ms(idle.gauge.maxP99)} / ${ms(busy.gauge.maxP99)} ms; nodejs_eventloop_lag_max_seconds max ${ms(idle.gauge.maxMax)} / ${ms(busy.gauge.maxMax)} ms (idle / during backups)`,
    `CPU: the load generator (this script) used ${fmt(idle.generatorCores)} / ${fmt(busy.generatorCores)} cores; other processes on the machine ${fmt(idle.other.cpuS, 1)} / ${fmt(busy.other.cpuS, 1)} CPU-s (${fmt(idle.other.share * 100, 0)} / ${fmt(busy.other.share * 100, 0)} % of all cores)${disturbed ? ' — the machine was not idle, the figures are disturbed' : ''}; load average at the start ${loadAtStart.map((v) => v.toFixed(2)).join(' ')}`,
    `peak RSS of the daemon (VmHWM): idle ${fmt(idle.rssMiB, 1)} MiB, during backups ${fmt(busy.rssMiB, 1)} MiB`,
    `machine: ${facts.nproc} cores (${facts.cpu}), ${facts.memGiB} GiB RAM, node ${facts.node}, ${pgVersion}; code ${code}; total ${fmt((performance.now() - t0) / 1000, 0)} s`,
  ];
  const targets = [
    ...(valid
      ? []
      : [
          `- INVALID — backups covered only ${fmt(busy.coverage * 100, 1)} % of the window (at least ${MIN_COVERAGE * 100} % needed): the figures "during backups" do not describe a backup`,
        ]),
    `- ${mark(busy.failed === 0 && idle.failed === 0)} — zero errors: during backups ${busy.non2xx} non-2xx, ${busy.errors} errors (${busy.timeouts} timeouts), ${busy.gauge.errors} side-scraper failures; idle ${idle.failed}`,
    `- ${mark(busy.p99 < TARGET_P99_MS)} — /metrics p99 under ${TARGET_P99_MS} ms during backups: ${ms(busy.p99)} ms (idle ${ms(idle.p99)} ms)`,
    `- ${mark(busy.lag.p99 < TARGET_LAG_P99_MS)} — event-loop lag p99 under ${TARGET_LAG_P99_MS} ms during backups: ${ms(busy.lag.p99)} ms (max ${ms(busy.lag.max)} ms; idle p99 ${ms(idle.lag.p99)} ms)`,
  ];
  const text = reportText(
    `## pg-maintd /metrics under load during a backup (${new Date().toISOString().slice(0, 16)}Z)`,
    table,
    details,
    targets,
  );
  process.stdout.write(text);
  if (opts.out) {
    const strip = (x) => Object.fromEntries(Object.entries(x).filter(([k]) => k !== 'runs'));
    writeFileSync(
      opts.out,
      `${JSON.stringify({ facts, pgVersion, code, opts, db, dbBytes, idle: strip(idle), busy: strip(busy), backups: runs, loadAtStart }, null, 2)}\n`,
    );
    log(`results also in ${opts.out}`);
  }
}

await runBench(main);
