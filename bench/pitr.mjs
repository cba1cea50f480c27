#!/usr/bin/env node
/**
 * `npm run bench:pitr`: point-in-time recovery with pg-maintd against doing it by hand, side by side
 * in one run on one cluster.
 *
 *   base     pg-maintd basebackup  against  pg_basebackup -D - -Ft -X none -c fast | pigz -6 (and gzip -6)
 *   archive  pg-maintd run with WAL_ARCHIVE=stream while pgbench writes: the RPO
 *            (pgmaintd_wal_archive_lag_seconds, scraped every second), WAL generated and uploaded
 *   restore  pg-maintd pitr restore --target-time T --start  against by hand: copy the stored base,
 *            gunzip | tar -x, gunzip every stored WAL object to its segment name, recovery.signal,
 *            restore_command = 'cp', recovery_target_time = T, pg_ctl start; both until
 *            pg_is_in_recovery() is false
 *
 * The cluster (wal_level=replica, full_page_writes=on) lives in a folder of its own under
 * /tmp/pgmaintd-bench and is reused with its generated database between runs. A pg-maintd case whose
 * command this build lacks is skipped with a note. See bench/README.md.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort } from '../dist/embedded/local-cluster.js';
import {
  CLI,
  GiB,
  MiB,
  chunkShape,
  cliEnv,
  codeVersion,
  connect,
  ensureDatabase,
  ensurePigz,
  fmt,
  fmtGiB,
  fmtMB,
  log,
  logMachine,
  machineCpu,
  metricSum,
  num,
  onCleanup,
  onJsonLines,
  othersCpu,
  parseMetrics,
  parseOptions,
  percentile,
  pgEnv,
  pollUrl,
  postmasterPid,
  reportText,
  runBench,
  runMeasured,
  setKillWait,
  sh,
  startCluster,
  startProcess,
  stopProcess,
  tableCounts,
  treeCpu,
} from './lib.mjs';

setKillWait(30_000); // the daemon drains within SHUTDOWN_GRACE_PERIOD (25 s)

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

const HELP = `usage: node bench/pitr.mjs [options]     (npm run bench:pitr -- [options])

  --gb N        size of the generated database in GiB (pg_database_size), default 2 (env BENCH_DB_GB)
  --scale N     pgbench scale of the write-load database (pgbench -i -s N), default 50
  --seconds S   pgbench run under the archiver (pgbench -T S), default 60
  --clients N   pgbench clients (pgbench -c N), default 4
  --dir PATH    persistent cluster folder, reused across runs, default /tmp/pgmaintd-bench/pitr
                (env BENCH_PITR_DIR); its own cluster: PITR needs wal_level=replica
  -h, --help    this text

Develop with a small database: --gb 0.1 --scale 5 --seconds 20.
`;

function options() {
  const values = parseOptions(HELP, {
    gb: { type: 'string' },
    scale: { type: 'string' },
    seconds: { type: 'string' },
    clients: { type: 'string' },
    dir: { type: 'string' },
  });
  return {
    gb: num('gb', values.gb ?? process.env.BENCH_DB_GB, 2, 0.01, 1024),
    scale: num('scale', values.scale, 50, 1, 10_000, true),
    seconds: num('seconds', values.seconds, 60, 10, 3600, true),
    clients: num('clients', values.clients, 4, 1, 100, true),
    dir: values.dir ?? process.env.BENCH_PITR_DIR ?? '/tmp/pgmaintd-bench/pitr',
    fresh: false,
  };
}

// ---------------------------------------------------------------------------------------------
// The cluster: what PITR needs, and WAL volumes as a production server writes them
// ---------------------------------------------------------------------------------------------

/**
 * What PITR needs (WAL for replication: pg_receivewal, pg_basebackup), with full-page writes and
 * checkpoints at PostgreSQL's defaults, so the archiver sees the WAL a production server writes
 * (BENCH_SETTINGS turn full_page_writes off and checkpoints away, which make WAL several times
 * smaller). Set with ALTER SYSTEM once the data is generated, which goes faster with BENCH_SETTINGS'
 * minimal WAL; a reused cluster has them already.
 */
const PITR_SETTINGS = {
  wal_level: 'replica',
  max_wal_senders: '10',
  max_replication_slots: '10',
  full_page_writes: 'on',
  max_wal_size: '1GB',
  checkpoint_timeout: '5min',
};
const SLOT = 'pgmaintd_bench';
const PGBENCH_DB = 'bench_pgbench';

async function ensurePitrSettings(cluster) {
  const admin = await connect(cluster);
  let changed = [];
  try {
    for (const [name, want] of Object.entries(PITR_SETTINGS)) {
      const have = (await admin.query(`SELECT current_setting($1) AS v`, [name])).rows[0].v;
      if (have !== want) {
        await admin.query(`ALTER SYSTEM SET ${name} = '${want}'`);
        changed.push(`${name} ${have} → ${want}`);
      }
    }
  } finally {
    await admin.end();
  }
  if (changed.length) {
    log(`restarting the cluster for ${changed.join(', ')}`);
    await cluster.stopServer();
    await cluster.startServer();
  }
}

/** Drops the benchmark's replication slot (left by an interrupted run, or this run's at the end). */
async function dropSlot(cluster) {
  const admin = await connect(cluster);
  try {
    const r = await admin.query(
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`,
      [SLOT],
    );
    if (r.rowCount) log(`dropped replication slot ${SLOT}`);
  } finally {
    await admin.end();
  }
}

/** The pgbench database at `scale`: reused when a run made it at that scale, else initialized. */
async function ensurePgbench(cluster, scale) {
  const admin = await connect(cluster);
  const mark = `pgmaintd-bench pgbench scale=${scale}`;
  try {
    const r = await admin.query(
      `SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = $1`,
      [PGBENCH_DB],
    );
    if (r.rows[0]?.c === mark) {
      log(`${PGBENCH_DB}: reusing (scale ${scale})`);
      return;
    }
    if (!r.rows.length) await admin.query(`CREATE DATABASE ${PGBENCH_DB}`);
    log(`${PGBENCH_DB}: pgbench -i -s ${scale}`);
    const t = performance.now();
    await sh(join(cluster.binaries.binDir, 'pgbench'), ['-i', '-s', String(scale), '-q'], {
      env: pgEnv(cluster, PGBENCH_DB),
    });
    await admin.query(`COMMENT ON DATABASE ${PGBENCH_DB} IS '${mark}'`);
    log(`${PGBENCH_DB}: ready in ${((performance.now() - t) / 1000).toFixed(0)} s`);
  } finally {
    await admin.end();
  }
}

/** Reads every file of the cluster once, so the first base backup does not pay for a cold page cache. */
async function warmCluster(cluster) {
  await sh('bash', [
    '-c',
    'find "$1/base" "$1/global" -type f -exec cat {} + > /dev/null',
    'warm',
    cluster.dataDir,
  ]);
}

async function clusterFacts(cluster) {
  const admin = await connect(cluster);
  try {
    const r = await admin.query(`SELECT (SELECT sum(pg_database_size(oid)) FROM pg_database)::bigint AS bytes,
       (SELECT system_identifier FROM pg_control_system())::text AS sysid, version() AS version`);
    return { bytes: Number(r.rows[0].bytes), sysid: r.rows[0].sysid, version: r.rows[0].version };
  } finally {
    await admin.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Which pg-maintd parts this build has
// ---------------------------------------------------------------------------------------------

/** Whether the CLI knows `words` (commander prints the top-level help for a command it lacks). */
async function hasCommand(words) {
  try {
    const out = await sh(process.execPath, [CLI, ...words, '--help']);
    return out.includes(`Usage: pg-maintd ${words.join(' ')}`);
  } catch {
    return false;
  }
}

/** Where a store keeps the cluster's PITR objects. */
const pitrDir = (store, sysid, kind) => join(store, 'pitr', sysid, kind);

function listDir(dir) {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------------------------
// The daemon, archiving
// ---------------------------------------------------------------------------------------------

/** The settings of every pg-maintd process of the run: one store, stream archiving, nothing scheduled. */
function maintdEnv(cluster, db, ctx) {
  return cliEnv(cluster, db, {
    BACKUP_DIR: ctx.store,
    WAL_ARCHIVE: 'stream',
    WAL_SLOT: SLOT,
    WAL_SPOOL_DIR: ctx.spool,
    BACKUP_SCHEDULE: 'off',
    BACKUP_VERIFY_SCHEDULE: 'off',
    BASEBACKUP_SCHEDULE: 'off',
    PITR_DRILL_SCHEDULE: 'off',
    MAINTENANCE_SCHEDULE: 'off',
    // the generated tables have no migration history; start-up would refuse to adopt them
    MIGRATE_ON_START: 'false',
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: '0',
  });
}

async function scrape(url) {
  const res = await globalThis.fetch(url, { signal: AbortSignal.timeout(5000) });
  return parseMetrics(await res.text());
}

/**
 * `pg-maintd run` with WAL_ARCHIVE=stream; resolves once it says its archiver is up
 * (pgmaintd_wal_archiver_up 1), or with a note saying why archiving is not measured.
 */
async function startDaemon(cluster, db, ctx) {
  const proc = startProcess(process.execPath, [CLI, 'run'], { env: maintdEnv(cluster, db, ctx) });
  const listening = await proc.waitForLog((l) => l.msg === 'http server listening');
  await proc.waitForLog((l) => l.msg === 'pg-maintd started');
  const url = `http://127.0.0.1:${listening.line.address.port}/metrics`;
  const until = Date.now() + 120_000;
  for (;;) {
    const m = await scrape(url).catch(() => ({}));
    if (m.pgmaintd_wal_archiver_up === undefined && Date.now() > until - 110_000) {
      await stopProcess(proc);
      return {
        note: 'this build of pg-maintd has no WAL archiver (no pgmaintd_wal_archiver_up on /metrics)',
      };
    }
    if (metricSum(m, 'pgmaintd_wal_archiver_up') === 1) return { proc, url };
    if (proc.child.exitCode !== null || Date.now() > until) {
      const tail = proc.stdout.slice(-2000);
      await stopProcess(proc);
      return { note: `the daemon's WAL archiver did not come up within 120 s:\n${tail}` };
    }
    await sleep(500);
  }
}

/** The finished segment holding the server's WAL up to now, once the store holds it (after pg_switch_wal()). */
async function switchAndWaitStored(cluster, ctx, timeoutMs) {
  const admin = await connect(cluster);
  let seg;
  try {
    seg = (await admin.query('SELECT pg_walfile_name(pg_switch_wal()) AS f')).rows[0].f;
  } finally {
    await admin.end();
  }
  const dir = pitrDir(ctx.store, ctx.sysid, 'wal');
  const until = Date.now() + timeoutMs;
  while (!listDir(dir).some((f) => f.startsWith(`${seg}-`))) {
    if (Date.now() > until)
      throw new Error(`segment ${seg} not in the store ${timeoutMs / 1000} s after pg_switch_wal()`);
    await sleep(250);
  }
  return seg;
}

/** pgbench_history rows of transactions that began by `at` (mtime is their start, in the server's zone). */
async function historyUpTo(cluster, at) {
  const client = await connect(cluster, PGBENCH_DB);
  try {
    const r = await client.query(
      `SELECT count(*)::bigint AS n FROM pgbench_history
        WHERE mtime <= ($1::timestamptz AT TIME ZONE current_setting('TimeZone'))`,
      [at.toISOString()],
    );
    return Number(r.rows[0].n);
  } finally {
    await client.end();
  }
}

async function currentLsnBytes(cluster) {
  const admin = await connect(cluster);
  try {
    return Number(
      (await admin.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS b`)).rows[0].b,
    );
  } finally {
    await admin.end();
  }
}

/**
 * pgbench writes for `seconds` while /metrics is read every second. T (the restore target) is taken
 * three quarters into the run, so WAL follows it; after pgbench the current segment is switched and
 * waited for in the store, so every WAL record up to T is in finished segments.
 */
async function caseArchive(cluster, ctx, opts) {
  const samples = [];
  const poll = pollUrl(ctx.daemon.url, 1000, 5000, (r) => {
    if (!r.ok) return samples.push({ at: Date.now(), error: r.error ?? r.status });
    const m = parseMetrics(r.body.toString());
    samples.push({
      at: Date.now(),
      lagS: metricSum(m, 'pgmaintd_wal_archive_lag_seconds'),
      lagBytes: metricSum(m, 'pgmaintd_wal_archive_lag_bytes'),
      spool: metricSum(m, 'pgmaintd_wal_spool_bytes'),
      uploaded: metricSum(m, 'pgmaintd_wal_uploaded_bytes_total'),
      segments: metricSum(m, 'pgmaintd_wal_uploaded_total', 'kind="segment"'),
      failures: metricSum(m, 'pgmaintd_wal_upload_failures_total'),
    });
  });
  const daemonPid = ctx.daemon.proc.child.pid;
  try {
    await sleep(3000); // a few samples of the idle server first
    const m0 = await scrape(ctx.daemon.url);
    const lsn0 = await currentLsnBytes(cluster);
    const cpu0 = treeCpu(daemonPid);
    const t0 = Date.now();
    const bench = startProcess(
      join(cluster.binaries.binDir, 'pgbench'),
      ['-c', String(opts.clients), '-T', String(opts.seconds), '-n', PGBENCH_DB],
      { env: pgEnv(cluster, PGBENCH_DB) },
    );
    let target;
    const mark = sleep(opts.seconds * 750).then(() => (target = new Date()));
    const r = await bench.exited;
    await mark;
    const t1 = Date.now();
    if (r.code !== 0) throw new Error(`pgbench failed (exit ${r.code}):\n${bench.stdout}\n${bench.stderr}`);
    const lsn1 = await currentLsnBytes(cluster);
    const m1 = await scrape(ctx.daemon.url);
    const cpu1 = treeCpu(daemonPid);
    const lastSeg = await switchAndWaitStored(cluster, ctx, 10 * 60_000);
    const sourceRows = await historyUpTo(cluster, target);
    const drainS = (Date.now() - t1) / 1000;
    const during = samples.filter((s) => s.at >= t0 && s.at <= t1 && !s.error);
    const lags = Float64Array.from(during.map((s) => s.lagS).filter((v) => Number.isFinite(v))).sort();
    const wallS = (t1 - t0) / 1000;
    const uploaded =
      metricSum(m1, 'pgmaintd_wal_uploaded_bytes_total') - metricSum(m0, 'pgmaintd_wal_uploaded_bytes_total');
    const segs =
      metricSum(m1, 'pgmaintd_wal_uploaded_total', 'kind="segment"') -
      metricSum(m0, 'pgmaintd_wal_uploaded_total', 'kind="segment"');
    return {
      target,
      sourceRows,
      lastSeg,
      wallS,
      drainS,
      tps: Number(/tps = ([\d.]+)/.exec(bench.stdout)?.[1]),
      walBytes: lsn1 - lsn0,
      uploadedBytes: uploaded,
      segmentBytes: segs * 16 * MiB,
      lag: {
        n: lags.length,
        p50: percentile(lags, 50),
        p99: percentile(lags, 99),
        max: lags.length ? lags[lags.length - 1] : NaN,
      },
      spoolMax: Math.max(0, ...during.map((s) => s.spool).filter((v) => Number.isFinite(v))),
      scrapeErrors: samples.filter((s) => s.error && s.at >= t0 && s.at <= t1).length,
      uploadFailures:
        metricSum(m1, 'pgmaintd_wal_upload_failures_total') -
        metricSum(m0, 'pgmaintd_wal_upload_failures_total'),
      daemonCpuS: cpu1 - cpu0,
      rssMiB: ctx.daemon.proc.sampler.rootMiB,
      rssWho: 'daemon',
      receiverRssMiB: ctx.daemon.proc.sampler.byName('pg_receivewal'),
    };
  } finally {
    await poll.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Base backups
// ---------------------------------------------------------------------------------------------

/** The baseline: pg_basebackup's tar on stdout, compressed by gzip or pigz at level 6, into a file. */
async function caseBaseShell(cluster, work, compressor) {
  const out = join(work, `base-${compressor}.tar.gz`);
  const script = `set -o pipefail; pg_basebackup -D - -Ft -X none -c fast | ${compressor} -6 > "$OUT"`;
  const r = await runMeasured(`pg_basebackup | ${compressor}`, 'bash', ['-c', script], {
    env: pgEnv(cluster, 'postgres', { OUT: out }),
  });
  return {
    wallS: r.wallS,
    bytes: statSync(out).size,
    file: out, // the restore by hand's base when pg-maintd has no basebackup command (the archiver ran)
    rssMiB: r.proc.sampler.byName(compressor),
    rssWho: compressor,
    basebackupRssMiB: r.proc.sampler.byName('pg_basebackup'),
    cpu: {
      [compressor]: r.proc.sampler.cpuByName(compressor),
      pg_basebackup: r.proc.sampler.cpuByName('pg_basebackup'),
    },
  };
}

/** `pg-maintd basebackup` into the run's store; the object is the one the restores start from. */
async function caseBaseMaintd(cluster, db, ctx) {
  const dir = pitrDir(ctx.store, ctx.sysid, 'base');
  const before = new Set(listDir(dir));
  const r = await runMeasured('pg-maintd basebackup', process.execPath, [CLI, 'basebackup'], {
    env: maintdEnv(cluster, db, ctx),
  });
  const made = listDir(dir).filter((f) => f.endsWith('.tar.gz') && !before.has(f));
  if (made.length !== 1)
    throw new Error(
      `pg-maintd basebackup: expected one new base backup in ${dir}, found ${made.length}:\n${r.proc.stdout.slice(-2000)}`,
    );
  const file = join(dir, made[0]);
  return {
    wallS: r.wallS,
    bytes: statSync(file).size,
    file,
    rssMiB: r.proc.sampler.rootMiB,
    rssWho: 'node',
    basebackupRssMiB: r.proc.sampler.byName('pg_basebackup'),
    cpu: { node: rootCpu(r.proc.sampler), pg_basebackup: r.proc.sampler.cpuByName('pg_basebackup') },
  };
}

// ---------------------------------------------------------------------------------------------
// Restores
// ---------------------------------------------------------------------------------------------

/** The uid/gid of the postgres OS user when we are root (the server refuses to run as root). */
function serverOwner() {
  if (userInfo().uid !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('running as root, and there is no postgres user to run PostgreSQL as');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** Stops a server started on `dataDir` (by the hand case or pg-maintd), if it is running. */
async function stopServerAt(cluster, dataDir, mode = 'fast') {
  if (!existsSync(join(dataDir, 'postmaster.pid'))) return;
  await sh(join(cluster.binaries.binDir, 'pg_ctl'), ['-D', dataDir, '-m', mode, '-w', 'stop'], {
    uidGid: serverOwner(),
    cwd: '/',
  }).catch((err) => log(`stopping the server in ${dataDir}: ${err.message.split('\n')[0]}`));
}

/**
 * Polls the restored server on `port` every 100 ms until pg_is_in_recovery() is false; resolves with
 * performance.now() then. Fails when `failed()` returns a reason (the process that should start it
 * exited with an error) or at the deadline.
 */
async function waitPromoted(cluster, port, failed, timeoutMs = 60 * 60_000) {
  const until = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const client = new pg.Client({
      host: '127.0.0.1',
      port,
      user: cluster.user,
      password: cluster.password,
      database: 'postgres',
      connectionTimeoutMillis: 2000,
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const r = await client.query('SELECT pg_is_in_recovery() AS r');
      if (r.rows[0].r === false) return performance.now();
      last = 'in recovery';
    } catch (err) {
      last = err.message;
    } finally {
      await client.end().catch(() => undefined);
    }
    const why = failed();
    if (why) throw new Error(why);
    if (Date.now() > until)
      throw new Error(`the restored server on port ${port} did not leave recovery: ${last}`);
    await sleep(100);
  }
}

/** CPU seconds the server running on `dataDir` used so far (its recovery included), 0 when none runs. */
function serverCpu(dataDir) {
  try {
    return treeCpu(Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]));
  } catch {
    return 0;
  }
}

/** CPU seconds of the sampled tree's root process (node's main thread is named MainThread, not node). */
function rootCpu(sampler) {
  return Math.max(
    0,
    ...[...sampler.peaks.values()].filter((p) => p.pid === sampler.rootPid).map((p) => p.cpuS),
  );
}

/** What the restored server holds: pgbench's history up to the target. */
async function restoredState(cluster, port) {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    user: cluster.user,
    password: cluster.password,
    database: PGBENCH_DB,
  });
  await client.connect();
  try {
    const r = await client.query(
      `SELECT count(*)::bigint AS n, max(mtime AT TIME ZONE current_setting('TimeZone')) AS last FROM pgbench_history`,
    );
    return { rows: Number(r.rows[0].n), last: r.rows[0].last };
  } finally {
    await client.end();
  }
}

const HAND_SCRIPT = `
set -euo pipefail
shopt -s nullglob
ts() { echo "$1 $(date +%s.%N)"; }
ts start
# 1. download the base backup (a copy from the store)
mkdir -p "$WORK/download"
cp -- "$BASE" "$WORK/download/"
ts download
# 2. unpack it
mkdir -m 700 "$WORK/data"
gunzip -c -- "$WORK/download/$(basename -- "$BASE")" | tar -x -C "$WORK/data"
ts extract
# 3. every stored WAL object, decompressed to its own name (<name>-<tag>.gz -> <name>); partials skipped
mkdir -p "$WORK/wal"
for f in "$STORE_WAL"/*.gz; do
  n=$(basename -- "$f")
  case "$n" in *.partial.*) continue ;; esac
  gunzip -c -- "$f" > "$WORK/wal/\${n%-*}"
done
ts wal
# 4. recovery settings, then start
touch "$WORK/data/recovery.signal"
cat >> "$WORK/data/postgresql.auto.conf" <<EOF
restore_command = 'cp $WORK/wal/%f %p'
recovery_target_time = '$TARGET'
recovery_target_action = 'promote'
EOF
run=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres:postgres "$WORK"
  run=(runuser -u postgres --)
fi
"\${run[@]}" "$PG_CTL" -D "$WORK/data" -l "$WORK/server.log" -o "-p $PORT" -W start > /dev/null
ts started
`;

async function restoreByHand(cluster, ctx, base, target) {
  const work = mkdtempSync(join(ctx.work, 'hand-'));
  chmodSync(work, 0o755);
  const port = await freePort();
  onCleanup(() => stopServerAt(cluster, join(work, 'data'), 'immediate'));
  const t0 = performance.now();
  const proc = startProcess('bash', ['-c', HAND_SCRIPT], {
    env: {
      PATH: process.env.PATH,
      LANG: 'C.UTF-8',
      WORK: work,
      BASE: base.file,
      STORE_WAL: pitrDir(ctx.store, ctx.sysid, 'wal'),
      // as an operator writes it: PostgreSQL's recovery_target_time refuses ISO 8601's T and Z
      TARGET: target.toISOString().replace('T', ' ').replace('Z', '+00'),
      PORT: String(port),
      PG_CTL: join(cluster.binaries.binDir, 'pg_ctl'),
    },
  });
  const r = await proc.exited;
  if (r.code !== 0)
    throw new Error(`restore by hand failed (exit ${r.code}):\n${proc.stdout}\n${proc.stderr}`);
  const logTail = () => {
    try {
      return readFileSync(join(work, 'server.log'), 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      return '';
    }
  };
  const done = await waitPromoted(cluster, port, () =>
    /FATAL|PANIC/.test(logTail()) && !existsSync(join(work, 'data', 'postmaster.pid'))
      ? `the server restored by hand stopped:\n${logTail()}`
      : undefined,
  );
  const doneAt = Date.now() - (performance.now() - done); // the script's stamps are wall-clock (date)
  const stamps = Object.fromEntries(
    proc.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([k, v]) => [k, Number(v) * 1000]),
  );
  const res = {
    wallS: (done - t0) / 1000,
    steps: {
      download: (stamps.download - stamps.start) / 1000,
      extract: (stamps.extract - stamps.download) / 1000,
      wal: (stamps.wal - stamps.extract) / 1000,
      recovery: (doneAt - stamps.wal) / 1000,
    },
    walFiles: listDir(join(work, 'wal')).length,
    cpu: Object.fromEntries(['gzip', 'tar'].map((n) => [n, proc.sampler.cpuByName(n)])),
    rssMiB: Math.max(proc.sampler.byName('gzip') ?? 0, proc.sampler.byName('tar') ?? 0),
    rssWho: 'gzip/tar',
    ...(await restoredState(cluster, port)),
  };
  res.serverCpuS = serverCpu(join(work, 'data'));
  await stopServerAt(cluster, join(work, 'data'));
  rmSync(work, { recursive: true, force: true });
  return res;
}

async function restoreMaintd(cluster, db, ctx, target) {
  const work = mkdtempSync(join(ctx.work, 'maintd-'));
  chmodSync(work, 0o755);
  const dataDir = join(work, 'data');
  const port = await freePort();
  onCleanup(() => stopServerAt(cluster, dataDir, 'immediate'));
  const t0 = performance.now();
  const t0Epoch = Date.now();
  const proc = startProcess(
    process.execPath,
    [
      CLI,
      'pitr',
      'restore',
      '--data-dir',
      dataDir,
      '--target-time',
      target.toISOString(),
      '--start',
      '--port',
      String(port),
    ],
    { env: maintdEnv(cluster, db, ctx) },
  );
  const logLines = []; // one-shot commands log to stderr (stdout is for their answer)
  onJsonLines(proc.child.stderr, (l) => logLines.push(l));
  let exit;
  proc.exited.then((r) => (exit = { ...r, at: performance.now() }));
  const done = await waitPromoted(cluster, port, () =>
    exit && exit.code !== 0
      ? `pg-maintd pitr restore failed (${exit.signal ?? `exit ${exit.code}`}):\n${proc.stdout.slice(-3000)}\n${proc.stderr.slice(-3000)}`
      : undefined,
  );
  // the command may return once the server is promoted, or keep going a little: it counts until both
  const grace = Promise.race([proc.exited, sleep(60_000)]);
  await grace;
  const end = exit ? Math.max(done, exit.at) : done;
  // its steps from its own log (millisecond timestamps): planning, unpacking and checking, recovery
  const at = (msg) => Date.parse(logLines.find((l) => l.msg === msg)?.time ?? '');
  const planned = at('restoring from this base backup');
  const started = at('restored server started; replaying WAL');
  const promoted = at('recovery complete; the server is promoted');
  const res = {
    wallS: (end - t0) / 1000,
    promotedS: (done - t0) / 1000,
    steps: {
      plan: (planned - t0Epoch) / 1000,
      unpack: (started - planned) / 1000,
      recovery: (promoted - started) / 1000,
    },
    cpu: {
      node: rootCpu(proc.sampler),
      ...Object.fromEntries(['tar', 'pg_verifybackup'].map((n) => [n, proc.sampler.cpuByName(n)])),
    },
    exitNote: exit
      ? exit.code === 0
        ? undefined
        : `exit ${exit.code}`
      : 'still running 60 s after promotion',
    rssMiB: proc.sampler.rootMiB,
    rssWho: 'node',
    ...(await restoredState(cluster, port)),
  };
  if (!exit) await stopProcess(proc);
  res.serverCpuS = serverCpu(dataDir);
  await stopServerAt(cluster, dataDir);
  rmSync(work, { recursive: true, force: true });
  return res;
}

// ---------------------------------------------------------------------------------------------
// Main and report
// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  const t0 = performance.now();
  const { facts } = logMachine();
  const pigz = await ensurePigz();
  const work = mkdtempSync(join(tmpdir(), 'pgmaintd-bench-pitr-'));
  chmodSync(work, 0o755); // the restored servers run as postgres in folders under it
  onCleanup(() => rmSync(work, { recursive: true, force: true }));

  mkdirSync(opts.dir, { recursive: true });
  const cluster = await startCluster(opts);

  const full = Math.round(opts.gb * GiB);
  const db = `bench_${Math.round(full / MiB)}mb`;
  const tGen = performance.now();
  await ensureDatabase(cluster, db, full, chunkShape(full));
  await ensurePgbench(cluster, opts.scale);
  const genS = (performance.now() - tGen) / 1000;
  await ensurePitrSettings(cluster);
  await dropSlot(cluster);
  onCleanup(() => dropSlot(cluster)); // runs after the daemon is stopped: a kept slot would hold WAL forever
  for (const line of await tableCounts(cluster, db)) log(`${db}: ${line}`);
  const cf = await clusterFacts(cluster);
  log(`cluster: ${fmtGiB(cf.bytes)} GiB in all databases, system identifier ${cf.sysid}`);
  const code = await codeVersion();

  const store = mkdtempSync(join(work, 'store-'));
  const spool = mkdtempSync(join(work, 'spool-'));
  const ctx = { work, store, spool, sysid: cf.sysid };
  const has = {
    basebackup: await hasCommand(['basebackup']),
    restore: await hasCommand(['pitr', 'restore']),
  };
  const notes = [];
  const postmaster = postmasterPid(cluster);
  const roots = () => [postmaster, ctx.daemon?.proc?.child.pid].filter(Boolean);
  const measure = async (title, fn) => {
    log(title);
    const before = machineCpu(roots);
    const x = await fn();
    x.other = othersCpu(before, machineCpu(roots), { steal: false });
    if (x.serverCpuS) {
      // the restored server is the case's own work, not another process's
      const cpuS = Math.max(0, x.other.cpuS - x.serverCpuS);
      x.other = { cpuS, share: x.other.cpuS ? (x.other.share * cpuS) / x.other.cpuS : 0 };
    }
    log(
      `  ${fmt(x.wallS, 1)} s${x.bytes ? `, ${fmtMB(x.bytes)} MB` : ''}${x.rssMiB ? `, peak RSS ${fmt(x.rssMiB, 1)} MiB (${x.rssWho})` : ''}${x.rows !== undefined ? `, ${x.rows} history rows` : ''}; other processes ${fmt(x.other.cpuS, 1)} CPU-s (${fmt(x.other.share * 100, 0)} %)`,
    );
    return x;
  };

  // the archiver first: pg-maintd's base backup is then the start of a WAL chain the restores use
  log('pg-maintd run, WAL_ARCHIVE=stream');
  const daemon = await startDaemon(cluster, db, ctx);
  if (daemon.note) {
    notes.push(`archiving and restores skipped: ${daemon.note}`);
    log(`skipped: ${daemon.note}`);
  } else ctx.daemon = daemon;

  await warmCluster(cluster);
  const base = {};
  base.gzip = await measure('pg_basebackup | gzip -6', () => caseBaseShell(cluster, work, 'gzip'));
  if (pigz) base.pigz = await measure('pg_basebackup | pigz -6', () => caseBaseShell(cluster, work, 'pigz'));
  if (has.basebackup)
    base.maintd = await measure('pg-maintd basebackup', () => caseBaseMaintd(cluster, db, ctx));
  else notes.push('pg-maintd basebackup skipped: this build has no `basebackup` command');

  let arch;
  if (ctx.daemon) {
    arch = await measure(`pgbench -c ${opts.clients} -T ${opts.seconds} -n while pg-maintd archives`, () =>
      caseArchive(cluster, ctx, opts),
    );
    log(
      `  RPO p50 ${fmt(arch.lag.p50, 1)} s, p99 ${fmt(arch.lag.p99, 1)} s, max ${fmt(arch.lag.max, 1)} s; WAL ${fmt(arch.walBytes / 1e6 / arch.wallS, 1)} MB/s; target ${arch.target.toISOString()}`,
    );
    await stopProcess(ctx.daemon.proc);
    ctx.daemon = undefined;
  }

  const restore = {};
  // both restores start from pg-maintd's base backup; without one, the hand case alone from the pigz
  // baseline's (taken while the archiver ran, so its WAL is stored too)
  const restoreBase = base.maintd ?? (has.restore ? undefined : base.pigz);
  if (!arch) notes.push('restores skipped: no WAL was archived');
  else if (!restoreBase)
    notes.push('restores skipped: no base backup in the store (pg-maintd basebackup missing)');
  else {
    if (restoreBase !== base.maintd)
      notes.push(
        'the restore by hand started from the pigz baseline (no pg-maintd base backup in this build)',
      );
    restore.hand = await measure(`restore by hand to ${arch.target.toISOString()}`, () =>
      restoreByHand(cluster, ctx, restoreBase, arch.target),
    );
    if (has.restore)
      restore.maintd = await measure(
        `pg-maintd pitr restore --target-time ${arch.target.toISOString()} --start`,
        () => restoreMaintd(cluster, db, ctx, arch.target),
      );
    else notes.push('pg-maintd pitr restore skipped: this build has no `pitr restore` command');
  }

  // -------------------------------------------------------------------------------------------
  const mark = (ok) => (ok === undefined ? 'not measured' : ok ? 'met' : 'MISSED');
  const size = `${fmtGiB(cf.bytes)} GiB cluster`;
  const table = [
    `**Base backup** (${size})`,
    '',
    '| case | wall s | ÷ pigz | output MB | peak RSS MiB | pg_basebackup RSS MiB |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  const baseRows = [
    ['`pg_basebackup -D - -Ft -X none -c fast \\| gzip -6 > file`', base.gzip],
    ['the same with `pigz -6`', base.pigz, pigz ? undefined : 'skipped: pigz could not be installed'],
    ['`pg-maintd basebackup` (to a directory store)', base.maintd, 'skipped: no `basebackup` command'],
  ];
  for (const [name, x, why] of baseRows) {
    if (!x) table.push(`| ${name} (${why}) | – | – | – | – | – |`);
    else
      table.push(
        `| ${name} | ${fmt(x.wallS, 1)} | ${base.pigz ? fmt(x.wallS / base.pigz.wallS) : '–'} | ${fmtMB(x.bytes)} | ${x.rssWho} ${fmt(x.rssMiB, 1)} | ${fmt(x.basebackupRssMiB, 1)} |`,
      );
  }
  table.push(
    '',
    `**WAL archiving** under \`pgbench -c ${opts.clients} -T ${opts.seconds} -n\` (scale ${opts.scale})`,
    '',
  );
  table.push(
    '| RPO p50 s | RPO p99 s | RPO max s | WAL written MB/s | segments stored MB/s | uploaded (gzip) MB/s | drain after load s | daemon peak RSS MiB |',
  );
  table.push('|---:|---:|---:|---:|---:|---:|---:|---:|');
  if (arch)
    table.push(
      `| ${fmt(arch.lag.p50, 1)} | ${fmt(arch.lag.p99, 1)} | ${fmt(arch.lag.max, 1)} | ${fmt(arch.walBytes / 1e6 / arch.wallS, 1)} | ${fmt(arch.segmentBytes / 1e6 / arch.wallS, 1)} | ${fmt(arch.uploadedBytes / 1e6 / arch.wallS, 1)} | ${fmt(arch.drainS, 1)} | ${fmt(arch.rssMiB, 1)} |`,
    );
  else table.push('| – | – | – | – | – | – | – | – |');
  table.push('', `**Restore to a target time**${arch ? ` (${arch.target.toISOString()})` : ''}`, '');
  table.push(
    '| case | wall s | ÷ by hand | peak RSS MiB | pgbench_history rows |',
    '|---|---:|---:|---:|---:|',
  );
  const restoreRows = [
    ['by hand: copy, `gunzip \\| tar -x`, gunzip the WAL, recovery.signal, `pg_ctl start`', restore.hand],
    ['`pg-maintd pitr restore --target-time T --start`', restore.maintd],
  ];
  for (const [name, x] of restoreRows) {
    if (!x) table.push(`| ${name} (skipped) | – | – | – | – |`);
    else
      table.push(
        `| ${name} | ${fmt(x.wallS, 1)} | ${restore.hand ? fmt(x.wallS / restore.hand.wallS) : '–'} | ${x.rssWho} ${fmt(x.rssMiB, 1)} | ${x.rows} |`,
      );
  }

  const targets = [
    `- pg-maintd basebackup wall ≤ 1.0× pigz: ${base.maintd && base.pigz ? `${fmt(base.maintd.wallS / base.pigz.wallS)}×` : '–'} — ${mark(base.maintd && base.pigz ? base.maintd.wallS <= base.pigz.wallS : undefined)}`,
    `- pg-maintd basebackup peak RSS ≤ 200 MB (read as MiB, as bench:backup does): ${base.maintd ? `${fmt(base.maintd.rssMiB, 1)} MiB = ${fmt((base.maintd.rssMiB * MiB) / 1e6, 1)} MB` : '–'} — ${mark(base.maintd ? base.maintd.rssMiB <= 200 : undefined)}`,
    `- RPO p99 ≤ 15 s with the defaults: ${arch ? `${fmt(arch.lag.p99, 1)} s` : '–'} — ${mark(arch && arch.lag.n ? arch.lag.p99 <= 15 : undefined)}`,
    `- pg-maintd pitr restore ≤ 1.2× by hand: ${restore.maintd ? `${fmt(restore.maintd.wallS / restore.hand.wallS)}×` : '–'} — ${mark(restore.maintd ? restore.maintd.wallS <= 1.2 * restore.hand.wallS : undefined)}`,
  ];

  const details = [
    `base backups, CPU-s of their processes: ${Object.entries(base)
      .map(
        ([k, x]) =>
          `${k}: ${Object.entries(x.cpu)
            .map(([n, v]) => `${n} ${fmt(v, 1)}`)
            .join(', ')}`,
      )
      .join('; ')}`,
  ];
  if (arch)
    details.push(
      `archiving: pgbench ${fmt(arch.tps, 0)} tps; ${fmtMB(arch.walBytes)} MB of WAL in ${fmt(arch.wallS, 1)} s; ${arch.lag.n} scrapes of the lag (${arch.scrapeErrors} failed); spool at most ${fmtMB(arch.spoolMax)} MB; ${arch.uploadFailures} upload failures; the daemon used ${fmt(arch.daemonCpuS, 1)} CPU-s (node + pg_receivewal), pg_receivewal peak RSS ${fmt(arch.receiverRssMiB, 1)} MiB; drain: from the end of pgbench until segment ${arch.lastSeg} (after pg_switch_wal()) was in the store`,
    );
  if (restore.hand) {
    const s = restore.hand.steps;
    details.push(
      `by hand, steps (s): copy ${fmt(s.download, 1)}, gunzip | tar ${fmt(s.extract, 1)}, gunzip of ${restore.hand.walFiles} WAL files ${fmt(s.wal, 1)}, settings, \`pg_ctl start\` and recovery until out of it ${fmt(s.recovery, 1)}; CPU-s gunzip ${fmt(restore.hand.cpu.gzip, 1)}, tar ${fmt(restore.hand.cpu.tar, 1)}, the restored server ${fmt(restore.hand.serverCpuS, 1)}`,
    );
  }
  if (restore.maintd)
    details.push(
      `pg-maintd pitr restore, steps from its log (s): listing the store and planning ${fmt(restore.maintd.steps.plan, 1)}, unpacking (checksum, gunzip, tar) and pg_verifybackup ${fmt(restore.maintd.steps.unpack, 1)}, start and recovery until promoted ${fmt(restore.maintd.steps.recovery, 1)}; out of recovery after ${fmt(restore.maintd.promotedS, 1)} s, the command ${restore.maintd.exitNote ?? 'exited 0'}; CPU-s ${Object.entries(
        restore.maintd.cpu,
      )
        .map(([k, v]) => `${k} ${fmt(v, 1)}`)
        .join(
          ', ',
        )}, the restored server (its restore_command runs included) ${fmt(restore.maintd.serverCpuS, 1)}`,
    );
  const checked = Object.entries(restore).map(
    ([k, x]) =>
      `${k === 'hand' ? 'by hand' : 'pg-maintd'} ${x.rows} rows, newest ${x.last ? new Date(x.last).toISOString() : '–'} ${x.last && new Date(x.last) <= arch.target ? '≤ T' : 'AFTER T (wrong)'}`,
  );
  if (checked.length)
    details.push(
      `check, pgbench_history in the restored servers: ${checked.join('; ')}${restore.hand && restore.maintd ? (restore.hand.rows === restore.maintd.rows ? ' (the same)' : ' (DIFFERENT)') : ''}; the source holds ${arch.sourceRows} rows of transactions begun by T (those still running at T are not in a restore)`,
    );
  const all = [...Object.entries(base), ...Object.entries(restore).map(([k, v]) => [`restore ${k}`, v])];
  if (arch) all.push(['archive', arch]);
  details.push(
    `other processes on the machine during each case, CPU-s (share of all cores): ${all.map(([k, x]) => `${k} ${fmt(x.other.cpuS, 1)} (${fmt(x.other.share * 100, 0)} %)`).join(', ')}`,
    `machine: ${facts.nproc} cores (${facts.cpu}), ${facts.memGiB} GiB RAM, node ${facts.node}, ${cf.version.split(' on ')[0]}; ${db} ${fmtGiB(full)} GiB asked, ${PGBENCH_DB} scale ${opts.scale}, ${size}; generation/reuse ${genS.toFixed(0)} s; code ${code}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  );

  const text = reportText(
    `## pg-maintd PITR benchmark (${new Date().toISOString().slice(0, 16)}Z)`,
    table,
    details,
    targets,
    [
      ...notes.map((n) => `Note: ${n}`),
      '',
      'MB = 10^6 bytes, MiB for RSS. Peak RSS: VmHWM of the pg-maintd node process, or of the compressor (gzip, pigz, tar) in the shell cases.',
      '',
    ],
  );
  process.stdout.write(text);
  const file = join(opts.dir, 'last-pitr-results.md');
  writeFileSync(file, text);
  log(`results also in ${file}`);
}

await runBench(main);
