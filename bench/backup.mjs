#!/usr/bin/env node
/**
 * `npm run bench:backup`: the backup pipeline against the seed's shell pipeline, side by side.
 *
 *   seed      pg_dump --clean --no-owner --no-privileges | gzip -6 > file
 *   pigz      the same with pigz -6
 *   dir       pg-maintd backup (the real CLI) to a local BACKUP_DIR
 *   dir age   the same encrypted to an age recipient (BACKUP_ENCRYPTION_RECIPIENTS), beside it
 *   s3        pg-maintd backup to an S3 test server (s3rver) on loopback
 *   dir 1/2   pg-maintd backup of a database half the size (peak RSS must not grow with size)
 *   run       pg-maintd run: a scheduled backup while /metrics is scraped in a loop
 *
 * The database (users/projects/tasks, the seed's shape) is generated once into a persistent cluster
 * under BENCH_DIR and reused by later runs. See bench/README.md.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CLI,
  GiB,
  MiB,
  chunkShape,
  cliEnv,
  codeVersion,
  cronAt,
  ensureDatabase,
  ensurePigz,
  fmt,
  fmtGiB,
  fmtMB,
  latencyStats,
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
  startProcess,
  startS3rver,
  stopProcess,
  tableCounts,
  warmCache,
} from './lib.mjs';

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

const HELP = `usage: node bench/backup.mjs [--gb N] [--dir PATH] [--fresh] [--no-half] [--runs N] [--encryption-only]

  --gb N      database size in GiB (pg_database_size), default 2 (env BENCH_DB_GB)
  --dir PATH  persistent cluster folder, reused across runs, default /tmp/pgmaintd-bench (env BENCH_DIR)
  --fresh     throwaway cluster (LocalCluster, temp folder), nothing reused (env BENCH_FRESH=1)
  --no-half   skip the half-size database (the peak-RSS flatness point) (env BENCH_HALF=0)
  --runs N    repeat each measured case N times, report the median time (env BENCH_RUNS), default 1
  --encryption-only  only pg-maintd -> dir with encryption off and on, alternating (env BENCH_ENCRYPTION_ONLY=1)
  -h, --help  this text
`;

function options() {
  const values = parseOptions(HELP, {
    gb: { type: 'string' },
    dir: { type: 'string' },
    fresh: { type: 'boolean' },
    'no-half': { type: 'boolean' },
    runs: { type: 'string' },
    'encryption-only': { type: 'boolean' },
  });
  return {
    gb: num('gb', values.gb ?? process.env.BENCH_DB_GB, 2, 0.01, 1024),
    runs: num('runs', values.runs ?? process.env.BENCH_RUNS, 1, 1, 20, true),
    dir: values.dir ?? process.env.BENCH_DIR ?? '/tmp/pgmaintd-bench',
    fresh: values.fresh ?? process.env.BENCH_FRESH === '1',
    half: !(values['no-half'] ?? process.env.BENCH_HALF === '0'),
    encryptionOnly: values['encryption-only'] ?? process.env.BENCH_ENCRYPTION_ONLY === '1',
  };
}

// ---------------------------------------------------------------------------------------------
// Processes: run, wait for log lines, sample peak RSS (VmHWM) of the whole tree
// ---------------------------------------------------------------------------------------------

// The measured cases
// ---------------------------------------------------------------------------------------------

const BACKUP_LINE = /^backup of [^:]+: (.+) \((\d+) bytes, sha256 ([0-9a-f]{64})\)$/m;

function backupResult(label, r) {
  const m = BACKUP_LINE.exec(r.proc.stdout);
  if (!m) throw new Error(`${label}: no "backup of" line in the output:\n${r.proc.stdout.slice(-2000)}`);
  const done = r.proc.lines.find((l) => l.msg === 'backup complete');
  return {
    wallS: r.wallS,
    bytes: Number(m[2]),
    where: m[1],
    rawBytes: done?.dumpedBytes,
    rssMiB: r.proc.sampler.rootMiB,
    pgDumpRssMiB: r.proc.sampler.byName('pg_dump'),
  };
}

/**
 * pg-maintd backup (one-shot CLI) into a fresh local directory; with `age` (a key pair from
 * age-keygen), encrypted to its recipient, and checked afterwards with `age -d | gzip -dc`.
 */
async function caseDaemonDir(cluster, db, work, label, age) {
  const dir = mkdtempSync(join(work, 'out-dir-'));
  const r = await runMeasured(label, process.execPath, [CLI, 'backup'], {
    env: cliEnv(cluster, db, {
      BACKUP_DIR: dir,
      ...(age ? { BACKUP_ENCRYPTION_RECIPIENTS: age.recipient } : {}),
    }),
  });
  const res = backupResult(label, r);
  // after the measurement: the file is a valid gzip stream (of members) of exactly what pg_dump wrote
  res.after = async () => {
    try {
      const script = age
        ? 'set -o pipefail; age -d -i "$2" -- "$1" | gzip -dc | wc -c'
        : 'set -o pipefail; gzip -dc -- "$1" | wc -c';
      const raw = Number((await sh('bash', ['-c', script, 'check', res.where, age?.file ?? ''])).trim());
      res.unpackedBytes = raw;
      // the CLI's log may not carry the dumped size: then the two cases are compared with each other
      res.check =
        res.rawBytes === undefined
          ? `${age ? 'age -d | gunzip' : 'gunzip'} ok, ${raw} bytes`
          : raw === res.rawBytes
            ? `${age ? 'age -d | gunzip' : 'gunzip'} ok`
            : `MISMATCH: gunzip gives ${raw} bytes, dumped ${res.rawBytes}`;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  return res;
}

/** The seed guide's pipeline, with gzip or pigz. */
async function caseShell(cluster, db, work, compressor, label) {
  const out = join(work, `${compressor}.sql.gz`);
  const env = pgEnv(cluster, db, { OUT: out });
  const script = `set -o pipefail; pg_dump --clean --no-owner --no-privileges | ${compressor} -6 > "$OUT"`;
  const r = await runMeasured(label, 'bash', ['-c', script], { env });
  const bytes = statSync(out).size;
  rmSync(out, { force: true });
  return {
    wallS: r.wallS,
    bytes,
    rssMiB: r.proc.sampler.byName(compressor),
    rssNote: compressor,
    pgDumpRssMiB: r.proc.sampler.byName('pg_dump'),
  };
}

/** pg-maintd backup to s3rver on loopback (s3rver runs in this process). */
async function caseDaemonS3(cluster, db, work, label) {
  const { HeadObjectCommand } = await import('@aws-sdk/client-s3');
  const store = await startS3rver(work);
  try {
    const r = await runMeasured(label, process.execPath, [CLI, 'backup'], {
      env: cliEnv(cluster, db, store.env),
    });
    const res = backupResult(label, r);
    const key = res.where.replace(`s3://${store.bucket}/`, '');
    const head = await store.s3.send(new HeadObjectCommand({ Bucket: store.bucket, Key: key }));
    res.check =
      head.ContentLength === res.bytes
        ? 'object size ok'
        : `MISMATCH: object ${head.ContentLength} bytes, manifest ${res.bytes}`;
    return res;
  } finally {
    await store.close();
  }
}

/** Scrapes /metrics sequentially, as fast as answers come, until `stop()` says so. */
async function scrapeLoop(url, stop) {
  const ms = [];
  let errors = 0;
  while (!stop()) {
    const t = performance.now();
    try {
      const res = await globalThis.fetch(url);
      await res.text();
      if (res.status !== 200) errors++;
    } catch {
      errors++;
      await sleep(10);
    }
    ms.push(performance.now() - t);
  }
  return { ms, errors };
}

/** pg-maintd run: its scheduled backup to a directory while /metrics is scraped in a loop. */
async function caseDaemonRun(cluster, db, work, label) {
  const dir = mkdtempSync(join(work, 'out-run-'));
  const at = new Date(Math.ceil((Date.now() + 8000) / 1000) * 1000);
  const proc = startProcess(process.execPath, [CLI, 'run'], {
    env: cliEnv(cluster, db, {
      BACKUP_DIR: dir,
      BACKUP_SCHEDULE: cronAt(at),
      SCHEDULE_TZ: 'UTC',
      BACKUP_VERIFY_SCHEDULE: 'off',
      // the generated tables have no migration history; start-up would refuse to adopt them
      MIGRATE_ON_START: 'false',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
    }),
  });
  try {
    const listening = await proc.waitForLog((l) => l.msg === 'http server listening');
    await proc.waitForLog((l) => l.msg === 'pg-maintd started');
    const url = `http://127.0.0.1:${listening.line.address.port}/metrics`;
    const isBackup = (l) => l.job === 'backup';
    const started = proc.waitForLog((l) => isBackup(l) && l.msg === 'backup started', 60_000);
    // idle baseline until the backup starts
    let backupStarted = false;
    started.then(
      () => (backupStarted = true),
      () => (backupStarted = true),
    );
    const idle = await scrapeLoop(url, () => backupStarted);
    const { at: t0 } = await started;
    let finished = false;
    const ended = proc.waitForLog(
      (l) => isBackup(l) && /^(backup complete|backup failed|scheduled backup failed)/.test(l.msg),
      60 * 60_000,
    );
    ended.then(
      () => (finished = true),
      () => (finished = true),
    );
    const busy = await scrapeLoop(url, () => finished);
    const { line: end, at: t1 } = await ended;
    if (end.msg !== 'backup complete')
      throw new Error(`${label}: ${end.msg}: ${JSON.stringify(end.err ?? end)}`);
    const res = {
      wallS: end.durationSeconds ?? (t1 - t0) / 1000,
      bytes: end.sizeBytes,
      rawBytes: end.dumpedBytes,
      rssMiB: proc.sampler.rootMiB,
      pgDumpRssMiB: proc.sampler.byName('pg_dump'),
      idle: { ...latencyStats(idle.ms), errors: idle.errors },
      busy: { ...latencyStats(busy.ms), errors: busy.errors },
      check: 'from the daemon log',
    };
    return res;
  } finally {
    await stopProcess(proc, 30_000);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A throwaway age key pair (age-keygen), or undefined when the age tools are not installed. */
async function ageKeyPair(work) {
  const file = join(work, 'age-key.txt');
  try {
    await sh('age-keygen', ['-o', file]);
    return { file, recipient: (await sh('age-keygen', ['-y', file])).trim() };
  } catch (err) {
    log(`no age key pair (${err.message}): the encrypted case is skipped`);
    return undefined;
  }
}

/**
 * The encryption side-by-side: the same database backed up to a directory with encryption off and
 * on in the same run (order alternating between runs, so neither always gets the warmer cache).
 * Targets: wall ≤ 1.10× and peak RSS ≤ +32 MiB of the plain run.
 */
function encryptionReport(plain, enc, size) {
  if (!enc) return { table: ['encryption: not measured (age-keygen missing)'], targets: [] };
  const table = [
    `| case (${size}) | wall s (median) | wall s per run | CPU-s (median) | peak RSS MiB | output MB | check |`,
    '|---|---:|---|---:|---:|---:|---|',
    ...[
      ['pg-maintd backup → dir, plain', plain],
      ['pg-maintd backup → dir, age-encrypted', enc],
    ].map(
      ([name, x]) =>
        `| ${name} | ${fmt(x.wallS, 2)} | ${x.walls.map((w) => w.toFixed(2)).join(' / ')} | ${fmt(x.cpuMedian, 1)} | ${fmt(x.rssMiB, 1)} | ${fmtMB(x.bytes)} | ${(x.check ?? '-').replaceAll('|', '\\|')} |`,
    ),
  ];
  const ratio = enc.wallS / plain.wallS;
  const extra = enc.rssMiB - plain.rssMiB;
  const mark = (ok) => (ok ? 'met' : 'MISSED');
  return {
    table,
    targets: [
      `- encrypted wall ≤ 1.10× plain: ${fmt(ratio, 3)}× — ${mark(ratio <= 1.1)}`,
      `- encrypted peak RSS ≤ plain + 32 MiB: ${extra >= 0 ? '+' : ''}${fmt(extra, 1)} MiB — ${mark(extra <= 32)}`,
      `- encrypted CPU-s vs plain (less disturbed by other processes than wall time): ${fmt(enc.cpuMedian / plain.cpuMedian, 3)}×`,
      `- encrypted output vs plain: +${fmt(enc.bytes - plain.bytes, 0)} bytes (age header and 16 bytes per 64 KiB chunk); both decompress to the same bytes: ${plain.unpackedBytes === enc.unpackedBytes ? 'yes' : 'NO'}`,
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/** Median wall time over runs; the largest RSS and the last run's other numbers. */
function combine(results) {
  const last = results[results.length - 1];
  return {
    ...last,
    wallS: median(results.map((r) => r.wallS)),
    walls: results.map((r) => r.wallS),
    cpuMedian: median(results.map((r) => r.cpuS ?? 0)),
    rssMiB: Math.max(...results.map((r) => r.rssMiB ?? 0)),
  };
}

async function main() {
  const opts = options();
  const t0 = performance.now();
  const { facts } = logMachine();

  const pigz = await ensurePigz();
  const work = mkdtempSync(join(tmpdir(), 'pgmaintd-bench-run-'));
  onCleanup(() => rmSync(work, { recursive: true, force: true }));

  const cluster = await startCluster(opts);
  const full = Math.round(opts.gb * GiB);
  const shape = chunkShape(full);
  const mb = (b) => `${Math.round(b / MiB)}mb`;
  const fullDb = `bench_${mb(full)}`;
  const halfDb = `bench_${mb(full / 2)}`;
  const tGen = performance.now();
  let halfBytes;
  if (opts.half) halfBytes = await ensureDatabase(cluster, halfDb, full / 2, shape);
  const fullBytes = await ensureDatabase(cluster, fullDb, full, shape, opts.half ? halfDb : undefined);
  const genS = (performance.now() - tGen) / 1000;
  for (const line of await tableCounts(cluster, fullDb)) log(`${fullDb}: ${line}`);
  const pgVersion = (await sh('pg_dump', ['--version'])).trim();
  const code = await codeVersion();
  const baseline = await runMeasured('pg-maintd --version', process.execPath, [CLI, '--version'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME ?? '/root' },
    sampleMs: 5,
  });

  const age = await ageKeyPair(work);
  const cases = {
    seed: [],
    pigz: [],
    dir: [],
    dirAge: [],
    s3: [],
    half: [],
    halfS3: [],
    run: [],
  };
  const postmaster = postmasterPid(cluster);
  if (!postmaster) throw new Error(`no postmaster.pid in ${cluster.dataDir}: is the cluster running?`);
  // this script (with the children it reaped) and the cluster's process tree
  const roots = () => [postmaster];
  /** Runs one case, notes how much CPU other processes on the machine took meanwhile, logs it. */
  const measure = async (name, title, fn) => {
    log(title);
    const before = machineCpu(roots);
    const x = await fn();
    const after = machineCpu(roots);
    x.cpuS = after.ours - before.ours; // CPU-s (machineCpu is in seconds, not USER_HZ ticks)
    x.other = othersCpu(before, after, { steal: false }); // as before: stolen time is not "other processes"
    await x.after?.();
    cases[name].push(x);
    report(name, x);
  };
  const encryptionPair = async (run, tag) => {
    const plain = () =>
      measure('dir', `pg-maintd backup -> dir${tag}`, () =>
        caseDaemonDir(cluster, fullDb, work, 'pg-maintd backup to dir'),
      );
    const encrypted = () =>
      measure('dirAge', `pg-maintd backup -> dir, age-encrypted${tag}`, () =>
        caseDaemonDir(cluster, fullDb, work, 'pg-maintd backup to dir, encrypted', age),
      );
    if (!age) return plain();
    if (run % 2 === 1) {
      await plain();
      await encrypted();
    } else {
      await encrypted();
      await plain();
    }
  };
  if (opts.encryptionOnly) {
    for (let run = 1; run <= opts.runs; run++) {
      await warmCache(cluster, fullDb);
      await encryptionPair(run, opts.runs > 1 ? ` (run ${run}/${opts.runs})` : '');
    }
    const r = Object.fromEntries(
      Object.entries(cases).map(([k, v]) => [k, v.length ? combine(v) : undefined]),
    );
    const e = encryptionReport(r.dir, r.dirAge, `${fmtGiB(fullBytes)} GiB`);
    const text = reportText(
      `## pg-maintd backup benchmark, encryption off/on (${new Date().toISOString().slice(0, 16)}Z)`,
      e.table,
      [
        `CPU-s per run (this case's processes, the PostgreSQL backend, this script): ${Object.entries(cases)
          .filter(([, v]) => v.length)
          .map(([k, v]) => `${k} ${v.map((x) => fmt(x.cpuS, 1)).join(' / ')}`)
          .join('; ')}`,
        `other processes on the machine during each run, share of all cores: ${Object.entries(cases)
          .filter(([, v]) => v.length)
          .map(([k, v]) => `${k} ${v.map((x) => `${fmt(x.other.share * 100, 0)} %`).join(' / ')}`)
          .join('; ')}`,
        `machine: ${facts.nproc} cores (${facts.cpu}), ${facts.memGiB} GiB RAM, node ${facts.node}, ${pgVersion}; database ${fullDb} ${fmtGiB(fullBytes)} GiB; code ${code}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`,
      ],
      e.targets,
      ['MB = 10^6 bytes for output, MiB for RSS (VmHWM of the pg-maintd node process).', ''],
    );
    process.stdout.write(text);
    return;
  }
  for (let run = 1; run <= opts.runs; run++) {
    const tag = opts.runs > 1 ? ` (run ${run}/${opts.runs})` : '';
    await warmCache(cluster, fullDb);
    await measure('seed', `seed: pg_dump | gzip -6${tag}`, () =>
      caseShell(cluster, fullDb, work, 'gzip', 'seed pipeline'),
    );
    if (pigz)
      await measure('pigz', `pg_dump | pigz -6${tag}`, () =>
        caseShell(cluster, fullDb, work, 'pigz', 'pigz pipeline'),
      );
    await encryptionPair(run, tag);
    await measure('s3', `pg-maintd backup -> S3 (s3rver)${tag}`, () =>
      caseDaemonS3(cluster, fullDb, work, 'pg-maintd backup to S3'),
    );
    if (opts.half) {
      await warmCache(cluster, halfDb);
      await measure('half', `pg-maintd backup -> dir, ${halfDb}${tag}`, () =>
        caseDaemonDir(cluster, halfDb, work, 'pg-maintd backup to dir (half size)'),
      );
      await measure('halfS3', `pg-maintd backup -> S3 (s3rver), ${halfDb}${tag}`, () =>
        caseDaemonS3(cluster, halfDb, work, 'pg-maintd backup to S3 (half size)'),
      );
    }
    await measure('run', `pg-maintd run: scheduled backup -> dir while /metrics is scraped${tag}`, () =>
      caseDaemonRun(cluster, fullDb, work, 'pg-maintd run'),
    );
  }

  const r = Object.fromEntries(Object.entries(cases).map(([k, v]) => [k, v.length ? combine(v) : undefined]));
  const seed = r.seed;
  const g = (b) => `${fmtGiB(b)} GiB`;
  const fullSize = g(fullBytes);
  const halfSize = r.half ? g(halfBytes) : '';
  // [name, result, RSS cell (default: the node process), compare with the seed (same database)]
  const rows = [
    [`seed: \`pg_dump \\| gzip -6 > file\` (${fullSize})`, seed, `gzip ${fmt(seed.rssMiB, 1)}`, true],
    r.pigz
      ? [`\`pg_dump \\| pigz -6 > file\` (${fullSize})`, r.pigz, `pigz ${fmt(r.pigz.rssMiB, 1)}`, true]
      : ['`pg_dump \\| pigz -6 > file` (skipped: pigz could not be installed)'],
    [`pg-maintd backup → dir (${fullSize})`, r.dir, undefined, true],
    ...(r.dirAge ? [[`pg-maintd backup → dir, age-encrypted (${fullSize})`, r.dirAge, undefined, true]] : []),
    [`pg-maintd backup → S3, s3rver on loopback (${fullSize})`, r.s3, undefined, true],
    ...(r.half
      ? [
          [`pg-maintd backup → dir (${halfSize})`, r.half, undefined, false],
          [`pg-maintd backup → S3, s3rver on loopback (${halfSize})`, r.halfS3, undefined, false],
        ]
      : []),
    [`pg-maintd run: scheduled backup → dir, /metrics scraped (${fullSize})`, r.run, undefined, true],
  ];
  const table = [
    '| case | wall s | ratio to seed | output MB | size vs gzip -6 | peak RSS MB |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  for (const [name, x, rss, same] of rows) {
    if (!x) {
      table.push(`| ${name} | – | – | – | – | – |`);
      continue;
    }
    const ratio = same ? fmt(x.wallS / seed.wallS) : '–';
    const sizeRatio = same ? fmt(x.bytes / seed.bytes, 3) : '–';
    table.push(
      `| ${name} | ${fmt(x.wallS, 1)} | ${ratio} | ${fmtMB(x.bytes)} | ${sizeRatio} | ${rss ?? `node ${fmt(x.rssMiB, 1)}`} |`,
    );
  }

  const busy = r.run.busy;
  const idle = r.run.idle;
  const mark = (ok) => (ok === undefined ? 'not measured' : ok ? 'met' : 'MISSED');
  const isFlat = (a, b) => Math.abs(b.rssMiB - a.rssMiB) <= Math.max(16, 0.1 * a.rssMiB);
  const flatText = (what, a, b) =>
    `${what} ${fmt(a.rssMiB, 1)} → ${fmt(b.rssMiB, 1)} MiB (${b.rssMiB >= a.rssMiB ? '+' : ''}${fmt(b.rssMiB - a.rssMiB, 1)})`;
  const daemonRss = [r.dir, r.dirAge, r.s3, r.half, r.halfS3, r.run].filter(Boolean);
  const worst = daemonRss.reduce((m, x) => (x.rssMiB > m.rssMiB ? x : m));
  const worstName = Object.keys(r).find((k) => r[k] === worst);
  const floor = r.dir.cpuS / facts.nproc; // the case's CPU time spread over every core, no waiting at all
  const targets = [
    `- pg-maintd → dir ≤ 0.55× seed: ${fmt(r.dir.wallS / seed.wallS)}× — ${mark(r.dir.wallS <= 0.55 * seed.wallS)} (its ${fmt(r.dir.cpuS, 1)} CPU-s on ${facts.nproc} cores cannot take less than ${fmt(floor, 1)} s = ${fmt(floor / seed.wallS)}× seed)`,
    `- pg-maintd → dir ≤ 1.0× pigz: ${r.pigz ? `${fmt(r.dir.wallS / r.pigz.wallS)}×` : 'no pigz'} — ${mark(r.pigz ? r.dir.wallS <= r.pigz.wallS : undefined)}`,
    `- output within 5 % of gzip -6: dir ${fmt((r.dir.bytes / seed.bytes - 1) * 100, 1)} %, S3 ${fmt((r.s3.bytes / seed.bytes - 1) * 100, 1)} % — ${mark(Math.abs(r.dir.bytes / seed.bytes - 1) <= 0.05 && Math.abs(r.s3.bytes / seed.bytes - 1) <= 0.05)}`,
    `- peak RSS ≤ 200 MB in every pg-maintd case: ${daemonRss.map((x) => fmt(x.rssMiB, 0)).join(', ')} MiB, highest ${worstName} — ${mark(worst.rssMiB <= 200)}`,
    r.half
      ? `- peak RSS flat from ${halfSize} to ${fullSize} (within max(16 MiB, 10 %)): ${flatText('dir', r.half, r.dir)}; ${flatText('S3', r.halfS3, r.s3)} — ${mark(isFlat(r.half, r.dir) && isFlat(r.halfS3, r.s3))}`
      : '- peak RSS flat between ½ and full size — not measured (--no-half)',
    `- /metrics p99 < 50 ms during a backup: ${fmt(busy.p99, 1)} ms — ${mark(busy.p99 < 50)}`,
    ...encryptionReport(r.dir, r.dirAge, fullSize).targets,
  ];

  const each = (fn) =>
    Object.entries(r)
      .filter(([, x]) => x)
      .map(([k, x]) => `${k} ${fn(x)}`)
      .join(', ');
  const disturbed = Object.values(cases)
    .flat()
    .some((x) => x.other.share > 0.05);
  const details = [
    `/metrics during the scheduled backup: ${busy.n} sequential requests, p50 ${fmt(busy.p50, 1)} ms, p99 ${fmt(busy.p99, 1)} ms, max ${fmt(busy.max, 1)} ms, ${busy.errors} errors (idle just before: ${idle.n} requests, p50 ${fmt(idle.p50, 1)} ms, p99 ${fmt(idle.p99, 1)} ms, max ${fmt(idle.max, 1)} ms)`,
    `pg_dump peak RSS (MiB): ${each((x) => fmt(x.pgDumpRssMiB, 1))}`,
    `CPU time of each case (its processes, the PostgreSQL backend, this script) in CPU-s: ${each((x) => fmt(x.cpuS, 1))} (run: with the daemon's start-up and the idle scraping before the backup)`,
    `other processes on the machine during each case, CPU-s (share of all cores): ${each((x) => `${fmt(x.other.cpuS, 1)} (${fmt(x.other.share * 100, 0)} %)`)}${disturbed ? ' — the machine was not idle; those times are disturbed' : ''}`,
    `dump (uncompressed) ${fmtMB(r.dir.rawBytes)} MB; gzip -6 ratio of the data ${fmt(seed.bytes / r.dir.rawBytes, 3)}; pg-maintd → dir ${fmt(r.dir.rawBytes / 1e6 / r.dir.wallS, 1)} MB/s of dump, seed ${fmt(r.dir.rawBytes / 1e6 / seed.wallS, 1)} MB/s`,
    `floor: \`pg-maintd --version\` alone peaks at ${fmt(baseline.proc.sampler.rootMiB, 1)} MiB RSS (node + loading the CLI)`,
    `checks: ${each((x) => x.check ?? '-')}`,
    ...(opts.runs > 1
      ? [
          `wall times per run (s): ${Object.entries(cases)
            .filter(([, v]) => v.length)
            .map(([k, v]) => `${k} ${v.map((x) => x.wallS.toFixed(1)).join('/')}`)
            .join('; ')}`,
        ]
      : []),
    `machine: ${facts.nproc} cores (${facts.cpu}), ${facts.memGiB} GiB RAM, node ${facts.node}, ${pgVersion}; databases ${fullDb} ${fullSize}${r.half ? `, ${halfDb} ${halfSize}` : ''}; generation/reuse ${genS.toFixed(0)} s; code ${code}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  ];

  const text = reportText(
    `## pg-maintd backup benchmark (${new Date().toISOString().slice(0, 16)}Z)`,
    table,
    details,
    targets,
    [
      'MB = 10^6 bytes for output, MiB for RSS. Peak RSS: VmHWM of the pg-maintd node process (not pg_dump), or of gzip/pigz for the shell pipelines.',
      '',
    ],
  );
  process.stdout.write(text);
  if (!opts.fresh) {
    const file = join(opts.dir, 'last-results.md');
    writeFileSync(file, text);
    log(`results also in ${file}`);
  }
}

function report(name, x) {
  log(
    `  ${name}: ${x.wallS.toFixed(1)} s, ${fmtMB(x.bytes)} MB, peak RSS ${fmt(x.rssMiB, 1)} MiB${x.rssNote ? ` (${x.rssNote})` : ''}, pg_dump ${fmt(x.pgDumpRssMiB, 1)} MiB${x.check ? `, ${x.check}` : ''}${x.other ? `; other processes used ${x.other.cpuS.toFixed(1)} CPU-s (${(x.other.share * 100).toFixed(0)} % of the machine)` : ''}`,
  );
}

await runBench(main);
