#!/usr/bin/env node
/**
 * `npm run bench:restore`: pg-maintd's restore against the seed guide's pipeline, side by side.
 *
 *   seed        gunzip -c file.sql.gz | psql (the seed guide)
 *   seed 1tx    the same with --single-transaction -v ON_ERROR_STOP=1 (the fair peer of pg-maintd)
 *   dir         pg-maintd restore --key of the plain backup, from a local BACKUP_DIR
 *   s3          the same from an S3 test server (s3rver, in this process)
 *   pg_restore  gunzip -c file | pg_restore --single-transaction (a custom-format backup)
 *   custom      pg-maintd restore --key of that custom-format backup
 *
 * Every case restores the same backups of the same database (bench:backup's, reused) into a new empty
 * database; the cases take turns within each run, so drift of the machine hits them all alike.
 */
import { createReadStream, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ChecksumVerifier } from '../dist/backup/checksum.js';
import { RestrictGuard } from '../dist/backup/psql-guard.js';
import {
  CLI,
  GiB,
  MiB,
  chunkShape,
  cliEnv,
  codeVersion,
  connect,
  cpuSeconds,
  dbUrl,
  ensureDatabase,
  fmt,
  fmtMB,
  log,
  logMachine,
  machineCpu,
  median,
  num,
  onCleanup,
  othersCpu,
  parseOptions,
  pgEnv,
  postmasterPid,
  reportText,
  runBench,
  runMeasured,
  sh,
  startCluster,
  startS3rver,
  tableCounts,
  treeCpu,
} from './lib.mjs';

const HELP = `usage: node bench/restore.mjs [--gb N] [--runs N] [--dir PATH] [--fresh] [--no-breakdown]

  --gb N          database size in GiB (pg_database_size), default 1 (env BENCH_DB_GB)
  --runs N        rounds of every case, interleaved; medians over them (env BENCH_RUNS), default 3
  --dir PATH      persistent cluster folder, shared with bench:backup, default /tmp/pgmaintd-bench (env BENCH_DIR)
  --fresh         throwaway cluster (LocalCluster, temp folder), nothing reused (env BENCH_FRESH=1)
  --no-breakdown  skip timing the restore's stream stages alone, without psql (env BENCH_BREAKDOWN=0)
  -h, --help      this text
`;

function options() {
  const values = parseOptions(HELP, {
    gb: { type: 'string' },
    runs: { type: 'string' },
    dir: { type: 'string' },
    fresh: { type: 'boolean' },
    'no-breakdown': { type: 'boolean' },
  });
  return {
    gb: num('gb', values.gb ?? process.env.BENCH_DB_GB, 1, 0.01, 1024),
    runs: num('runs', values.runs ?? process.env.BENCH_RUNS, 3, 1, 20, true),
    dir: values.dir ?? process.env.BENCH_DIR ?? '/tmp/pgmaintd-bench',
    fresh: values.fresh ?? process.env.BENCH_FRESH === '1',
    breakdown: !(values['no-breakdown'] ?? process.env.BENCH_BREAKDOWN === '0'),
  };
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

const CHECKING = "checking the backup's checksum before anything of it runs";
const TABLES = ['users', 'projects', 'tasks'];
/** Debian's gunzip is a script that execs `gzip -d`: the process to find is gzip. */
const shown = (tool) => (tool === 'gzip' ? 'gunzip' : tool);
const PSQL_ARGS = '-h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$PGDATABASE"';

/** A shell pipeline from the backup file into a client program. */
const shellCase = (script, format) => async (ctx, target, label) => {
  const r = await runMeasured(label, 'bash', ['-c', `set -o pipefail; ${script}`], {
    env: pgEnv(ctx.cluster, target, { FILE: ctx.backups[format].file }),
  });
  return { wallS: r.wallS, proc: r.proc };
};

/** `pg-maintd restore --key` (the real CLI) of a backup in `store` (the directory or s3rver). */
const daemonCase = (format, store) => async (ctx, target, label) => {
  const b = ctx.backups[format];
  const r = await runMeasured(
    label,
    process.execPath,
    [CLI, 'restore', '--key', b.key, '--target-url', dbUrl(ctx.cluster, target)],
    { env: cliEnv(ctx.cluster, ctx.db, store === 's3' ? ctx.s3.env : { BACKUP_DIR: b.dir }) },
  );
  const at = (msg) => Date.parse(r.proc.lines.find((l) => l.msg === msg)?.time ?? '');
  return {
    wallS: r.wallS,
    proc: r.proc,
    rssMiB: r.proc.sampler.rootMiB,
    checksumS: (at('restore started') - at(CHECKING)) / 1000,
  };
};

/** The cases in the order they run within a run; `peer`: what the case is compared with. */
const CASES = [
  {
    name: 'seed',
    title: 'seed: `gunzip -c \\| psql`',
    tools: ['gzip', 'psql'],
    run: shellCase(`gunzip -c "$FILE" | psql ${PSQL_ARGS}`, 'plain'),
  },
  {
    name: 'seed1tx',
    title: 'seed + `--single-transaction -v ON_ERROR_STOP=1`',
    peer: 'seed',
    tools: ['gzip', 'psql'],
    run: shellCase(`gunzip -c "$FILE" | psql --single-transaction -v ON_ERROR_STOP=1 ${PSQL_ARGS}`, 'plain'),
  },
  {
    name: 'dir',
    title: 'pg-maintd restore, plain, from a directory',
    peer: 'seed1tx',
    tools: ['psql'],
    daemon: true,
    run: daemonCase('plain', 'dir'),
  },
  {
    name: 's3',
    title: 'pg-maintd restore, plain, from S3 (s3rver on loopback)',
    peer: 'seed1tx',
    tools: ['psql'],
    daemon: true,
    run: daemonCase('plain', 's3'),
  },
  {
    name: 'pg_restore',
    title: '`gunzip -c \\| pg_restore --single-transaction` (custom format)',
    tools: ['gzip', 'pg_restore'],
    // the flags pg-maintd gives pg_restore, so the two differ only in what pg-maintd adds
    run: shellCase(
      'gunzip -c "$FILE" | pg_restore --single-transaction --exit-on-error --no-owner --no-privileges -d "$PGDATABASE"',
      'custom',
    ),
  },
  {
    name: 'custom',
    title: 'pg-maintd restore, custom format, from a directory',
    peer: 'pg_restore',
    tools: ['pg_restore'],
    daemon: true,
    run: daemonCase('custom', 'dir'),
  },
];

/** Exact row counts of the generated tables (undefined when the database lacks them). */
async function exactCounts(cluster, db) {
  const client = await connect(cluster, db);
  try {
    const sql = `SELECT ${TABLES.map((t) => `(SELECT count(*) FROM ${t}) AS ${t}`).join(', ')}`;
    const row = (await client.query(sql)).rows[0];
    return Object.fromEntries(TABLES.map((t) => [t, Number(row[t])]));
  } catch (err) {
    return { error: err.message };
  } finally {
    await client.end();
  }
}

/** pg-maintd backup (the real CLI) of `db` into a new folder; the key, file and sizes from its log. */
async function makeBackup(cluster, db, work, format) {
  const dir = mkdtempSync(join(work, `store-${format}-`));
  const r = await runMeasured(`pg-maintd backup (${format})`, process.execPath, [CLI, 'backup'], {
    env: cliEnv(cluster, db, { BACKUP_DIR: dir, BACKUP_FORMAT: format }),
  });
  const done = r.proc.lines.find((l) => l.msg === 'backup complete');
  if (!done)
    throw new Error(`no "backup complete" line from pg-maintd backup:\n${r.proc.stdout.slice(-2000)}`);
  log(`  ${format}: ${done.key}, ${fmtMB(done.sizeBytes)} MB (${fmtMB(done.dumpedBytes)} MB dumped)`);
  return {
    dir,
    key: done.key,
    file: join(dir, done.key),
    bytes: done.sizeBytes,
    raw: done.dumpedBytes,
    sha256: done.sha256,
  };
}

/** Copies every file of a directory store into the bucket under the same keys. */
async function copyToS3(store, dir) {
  const { PutObjectCommand } = await import('@aws-sdk/client-s3');
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || e.name.startsWith('.')) continue;
    const path = join(e.parentPath ?? e.path, e.name);
    // a Buffer, not a stream: the SDK would send a stream with aws-chunked encoding, which s3rver stores as is
    await store.s3.send(
      new PutObjectCommand({
        Bucket: store.bucket,
        Key: path.slice(dir.length + 1),
        Body: readFileSync(path),
      }),
    );
  }
}

/** CPU seconds so far: the machine, this script alone, this script with its reaped children, the cluster. */
function cpuNow(postmaster) {
  const u = process.cpuUsage();
  return {
    machine: machineCpu(() => [postmaster]),
    own: (u.user + u.system) / 1e6,
    reaped: cpuSeconds('self', true),
    server: treeCpu(postmaster),
  };
}

/** One case into a new empty database: times, CPU, and the restored row counts against the source's. */
async function measure(ctx, c, tag) {
  const target = `bench_restore_${c.name}`;
  await ctx.admin.query(`DROP DATABASE IF EXISTS ${target} WITH (FORCE)`);
  await ctx.admin.query(`CREATE DATABASE ${target}`);
  await ctx.admin.query('CHECKPOINT'); // the previous case's dirty pages are not this one's work
  log(`${c.name}${tag}`);
  const a = cpuNow(ctx.postmaster);
  const x = await c.run(ctx, target, c.name);
  const b = cpuNow(ctx.postmaster);
  x.ownCpuS = b.own - a.own; // s3rver and the pipes of this script
  x.clientCpuS = b.reaped - a.reaped - x.ownCpuS; // the case's processes, reaped by the end
  x.toolCpu = Object.fromEntries(c.tools.map((t) => [t, x.proc.sampler.cpuByName(t) ?? 0]));
  // pg-maintd's own share: what its one child (psql or pg_restore) did not use
  if (c.daemon) x.toolCpu = { node: x.clientCpuS - x.toolCpu[c.tools[0]], ...x.toolCpu };
  x.serverCpuS = b.server - a.server;
  x.other = othersCpu(a.machine, b.machine, { steal: false });
  x.loadavg = loadavg()[0];
  delete x.proc;
  const rows = await exactCounts(ctx.cluster, target);
  const bad = TABLES.filter((t) => rows[t] !== ctx.sourceRows[t]);
  x.check = bad.length
    ? `MISMATCH: ${rows.error ?? bad.map((t) => `${t} ${rows[t]} of ${ctx.sourceRows[t]}`).join(', ')}`
    : 'rows ok';
  await ctx.admin.query(`DROP DATABASE ${target} WITH (FORCE)`);
  log(
    `  ${fmt(x.wallS, 1)} s; CPU-s: client ${fmt(x.clientCpuS, 1)} (${Object.entries(x.toolCpu)
      .map(([t, s]) => `${shown(t)} ${fmt(s, 1)}`)
      .join(
        ', ',
      )}), PostgreSQL ${fmt(x.serverCpuS, 1)}${x.rssMiB ? `; peak RSS ${fmt(x.rssMiB, 1)} MiB; checksum-first pass ${fmt(x.checksumS, 1)} s` : ''}; ${x.check}; other processes ${fmt(x.other.cpuS, 1)} CPU-s (${fmt(x.other.share * 100, 0)} %)`,
  );
  return x;
}

// ---------------------------------------------------------------------------------------------
// The stages alone: what the node process does to the bytes, without psql or a database
// ---------------------------------------------------------------------------------------------

/** What pg-maintd's directory store reads at a time. */
const READ_CHUNK = 256 * 1024;

/** The guard, timing its own work: it runs on the main thread, synchronously, chunk by chunk. */
class TimedGuard extends RestrictGuard {
  seconds = 0;
  _transform(chunk, enc, cb) {
    const t = performance.now();
    super._transform(chunk, enc, cb);
    this.seconds += (performance.now() - t) / 1000;
  }
}

/**
 * The node side of a plain restore, stage by stage, on the backup file (page cache), into nothing:
 * the checksum-first pass, then the second pass without and with the guard; `gunzip -c` for scale.
 * Interleaved like the cases; CPU-s are this process's, all threads (zlib runs on the thread pool).
 */
async function breakdown(b, runs) {
  const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
  const verifier = () => new ChecksumVerifier(b.sha256, b.key);
  const inProcess = (stages) => async () => {
    const st = stages();
    const t = performance.now();
    const u = process.cpuUsage();
    await pipeline(createReadStream(b.file, { highWaterMark: READ_CHUNK }), ...st, sink());
    const d = process.cpuUsage(u);
    const guardS = st.find((x) => x instanceof TimedGuard)?.seconds;
    return { wallS: (performance.now() - t) / 1000, cpuS: (d.user + d.system) / 1e6, guardS };
  };
  const variants = {
    sha: ['read → SHA-256 (the checksum-first pass)', inProcess(() => [verifier()])],
    gunzip: ['read → SHA-256 → gunzip (16 KiB chunks)', inProcess(() => [verifier(), createGunzip()])],
    guard: [
      'read → SHA-256 → gunzip (16 KiB chunks) → guard',
      inProcess(() => [verifier(), createGunzip(), new TimedGuard()]),
    ],
    // zlib's default output chunk is 16 KiB: every chunk is a trip to the thread pool and through each
    // stage; pg-maintd's restore decompresses in 256 KiB chunks for that reason
    bigChunks: [
      'the same with gunzip chunks of 256 KiB (what pg-maintd runs and psql is fed)',
      inProcess(() => [verifier(), createGunzip({ chunkSize: READ_CHUNK }), new TimedGuard()]),
    ],
    gzip: [
      '`gunzip -c > /dev/null`',
      async () => {
        const r = await runMeasured('gunzip', 'bash', [
          '-c',
          'gunzip -c -- "$1" > /dev/null',
          'gunzip',
          b.file,
        ]);
        return { wallS: r.wallS, cpuS: r.proc.sampler.cpuByName('gzip') };
      },
    ],
  };
  const xs = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (let i = 0; i < runs; i++) for (const [k, [, fn]] of Object.entries(variants)) xs[k].push(await fn());
  const out = {};
  for (const [k, [name]] of Object.entries(variants)) {
    const m = (key) => median(xs[k].map((x) => x[key]));
    out[k] = {
      name,
      wallS: m('wallS'),
      cpuS: m('cpuS'),
      guardS: xs[k][0].guardS === undefined ? undefined : m('guardS'),
    };
    log(
      `  ${name}: ${fmt(out[k].wallS, 2)} s, ${fmt(out[k].cpuS, 2)} CPU-s${out[k].guardS === undefined ? '' : `, ${fmt(out[k].guardS, 2)} s of it in the guard`}`,
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Main and report
// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  const t0 = performance.now();
  const { facts, loadAtStart } = logMachine();
  const work = mkdtempSync(join(tmpdir(), 'pgmaintd-bench-restore-'));
  onCleanup(() => rmSync(work, { recursive: true, force: true }));

  const cluster = await startCluster(opts);
  const full = Math.round(opts.gb * GiB);
  const db = `bench_${Math.round(full / MiB)}mb`;
  const dbBytes = await ensureDatabase(cluster, db, full, chunkShape(full));
  for (const line of await tableCounts(cluster, db)) log(`${db}: ${line}`);
  const sourceRows = await exactCounts(cluster, db);
  if (sourceRows.error) throw new Error(`${db}: ${sourceRows.error}`);
  const postmaster = postmasterPid(cluster);
  if (!postmaster) throw new Error(`no postmaster.pid in ${cluster.dataDir}: is the cluster running?`);
  const admin = await connect(cluster);
  onCleanup(() => admin.end());

  log('the backups every run restores: pg-maintd backup, plain and custom format');
  const backups = {
    plain: await makeBackup(cluster, db, work, 'plain'),
    custom: await makeBackup(cluster, db, work, 'custom'),
  };
  const s3 = await startS3rver(work);
  await copyToS3(s3, backups.plain.dir);
  // the files were just written; read once more so no case pays for a cold page cache
  await sh('bash', ['-c', 'cat -- "$@" > /dev/null', 'warm', backups.plain.file, backups.custom.file]);

  const ctx = { cluster, db, admin, postmaster, backups, s3, sourceRows };
  const results = Object.fromEntries(CASES.map((c) => [c.name, []]));
  for (let run = 1; run <= opts.runs; run++)
    for (const c of CASES) results[c.name].push(await measure(ctx, c, ` (run ${run}/${opts.runs})`));
  let stages;
  if (opts.breakdown) {
    log('the stream stages alone, in this process, on the plain backup');
    stages = await breakdown(backups.plain, opts.runs);
  }
  const loadAtEnd = loadavg();

  const text = await report({
    opts,
    facts,
    results,
    backups,
    db,
    dbBytes,
    sourceRows,
    stages,
    loadAtStart,
    loadAtEnd,
    t0,
  });
  process.stdout.write(text);
  if (!opts.fresh) {
    const file = join(opts.dir, 'last-restore-results.md');
    writeFileSync(file, text);
    log(`results also in ${file}`);
  }
}

async function report(r) {
  const { opts, facts, results, backups, db, dbBytes, sourceRows, stages, loadAtStart, loadAtEnd, t0 } = r;
  const pgVersion = (await sh('psql', ['--version'])).trim();
  const code = await codeVersion();
  const walls = (name) => results[name].map((x) => x.wallS);
  /** The median of the per-run ratios of a case's wall time to another's (same run, same machine state). */
  const ratio = (name, to) => median(walls(name).map((w, i) => w / walls(to)[i]));
  const med = (name, key) => median(results[name].map((x) => x[key]));
  const perCase = (fn) => CASES.map((c) => `${c.name} ${fn(results[c.name], c)}`).join('; ');
  const loads = (xs) => xs.map((v) => v.toFixed(2)).join(' ');

  const table = [
    '| case | wall s, median (min–max) | ÷ peer | ÷ seed | client CPU-s | PostgreSQL CPU-s | pg-maintd peak RSS MiB | checksum-first pass s |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of CASES) {
    const xs = results[c.name];
    const w = walls(c.name);
    const tools = Object.keys(xs[0].toolCpu).map(
      (t) => `${shown(t)} ${fmt(median(xs.map((x) => x.toolCpu[t])), 1)}`,
    );
    const cells = [
      c.title,
      `${fmt(median(w), 1)} (${fmt(Math.min(...w), 1)}–${fmt(Math.max(...w), 1)})`,
      c.peer ? `${fmt(ratio(c.name, c.peer))} × ${c.peer}` : '–',
      fmt(ratio(c.name, 'seed')),
      `${fmt(med(c.name, 'clientCpuS'), 1)} (${tools.join(', ')})`,
      fmt(med(c.name, 'serverCpuS'), 1),
      c.daemon ? fmt(Math.max(...xs.map((x) => x.rssMiB)), 1) : '–',
      c.daemon ? fmt(med(c.name, 'checksumS'), 2) : '–',
    ];
    table.push(`| ${cells.join(' | ')} |`);
  }

  const disturbedRuns = [];
  for (let i = 0; i < opts.runs; i++) {
    const worst = Math.max(...CASES.map((c) => results[c.name][i].other.share));
    if (worst > 0.05) disturbedRuns.push(`run ${i + 1} (up to ${fmt(worst * 100, 0)} % of the machine)`);
  }
  const worstOther = (xs) => xs.map((x) => x.other).reduce((m, o) => (o.share > m.share ? o : m));
  const pass = (name) =>
    `${fmt(med(name, 'checksumS'), 2)} s (${fmt(backups.plain.bytes / 1e6 / med(name, 'checksumS'), 0)} MB/s)`;
  const p = backups.plain;
  const details = [
    `backups (pg-maintd backup of ${db}, made at the start of the run): plain ${fmtMB(p.bytes)} MB (${fmtMB(p.raw)} MB of SQL), custom ${fmtMB(backups.custom.bytes)} MB (${fmtMB(backups.custom.raw)} MB archive); source rows ${TABLES.map((t) => `${t} ${sourceRows[t].toLocaleString('en-US')}`).join(', ')}`,
    `checksum-first pass (pg-maintd's log, "${CHECKING}" to "restore started"): dir ${pass('dir')}, S3 ${pass('s3')}, custom ${pass('custom')}; ${fmt((med('dir', 'checksumS') / med('dir', 'wallS')) * 100, 1)} % of the dir restore's wall time`,
    `CPU: client = the case's processes (bash, gunzip, psql, pg_restore, pg-maintd's node); node = client − its child; PostgreSQL = the cluster's processes (the restoring backend, checkpointer, writers); this script during the S3 case (s3rver): ${fmt(med('s3', 'ownCpuS'), 1)} CPU-s`,
    `other processes on the machine, CPU-s (share of all cores), worst run of each case: ${perCase((xs) => `${fmt(worstOther(xs).cpuS, 1)} (${fmt(worstOther(xs).share * 100, 0)} %)`)}${disturbedRuns.length ? ` — DISTURBED: ${disturbedRuns.join(', ')}; the machine was not idle, those times are disturbed` : ''}`,
    `wall times per run (s; * = other processes used more than 5 % of the machine meanwhile): ${perCase((xs) => xs.map((x) => `${x.wallS.toFixed(1)}${x.other.share > 0.05 ? '*' : ''}`).join('/'))}`,
    `1-minute load average after each case: ${perCase((xs) => xs.map((x) => x.loadavg.toFixed(1)).join('/'))}`,
    ...(stages ? [stagesText(stages, opts.runs)] : []),
    `checks (restored row counts = the source's): ${perCase((xs) => xs.map((x) => x.check).join('/'))}`,
    `machine: ${facts.nproc} cores (${facts.cpu}), ${facts.memGiB} GiB RAM, node ${facts.node}, ${pgVersion}; database ${db} ${fmt(dbBytes / GiB, 2)} GiB; load average at the start ${loads(loadAtStart)}, at the end ${loads(loadAtEnd)}; code ${code}; ${opts.runs} runs; total ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  ];
  const intact = Object.values(results)
    .flat()
    .every((x) => x.check === 'rows ok');
  return reportText(
    `## pg-maintd restore benchmark (${new Date().toISOString().slice(0, 16)}Z)`,
    table,
    details,
    [
      `- every restore holds the source's rows (users, projects, tasks), every case and run — ${intact ? 'met' : 'MISSED'}`,
    ],
    [
      'Wall: spawn to exit (pg-maintd includes its start-up and the checksum-first pass). ÷ peer, ÷ seed: the median over runs of the ratio within a run. MiB for RSS (VmHWM of the pg-maintd node process).',
      '',
    ],
  );
}

function stagesText(st, runs) {
  const each = Object.values(st).map(
    (x) =>
      `${x.name} ${fmt(x.wallS, 2)} s / ${fmt(x.cpuS, 2)} CPU-s${x.guardS === undefined ? '' : ` (guard ${fmt(x.guardS, 2)} s)`}`,
  );
  const cpu = (a, b) => fmt(st[a].cpuS - (b ? st[b].cpuS : 0), 2);
  return `the stream stages alone (in this process, from the page cache, no psql, median of ${runs}): ${each.join('; ')}; so in CPU-s: SHA-256 ${cpu('sha')} a pass, node's gunzip ${cpu('gunzip', 'sha')} (gzip -d ${cpu('gzip')}), the guard ${fmt(st.guard.guardS, 2)} (timed inside it); 256 KiB chunks (pg-maintd's) save ${cpu('guard', 'bigChunks')}`;
}

await runBench(main);
