/**
 * What the benchmarks share: the command line (parsing, --help, number options) and failing with a
 * usage error, timestamped log lines, and a cleanup that also runs on Ctrl-C: running loads are
 * stopped, child process groups signalled (SIGKILL after `killWaitMs`), then the registered cleanup
 * steps run, last registered first.
 *
 * Also: child processes with peak-RSS sampling, the benchmark cluster (dist/'s LocalCluster, kept
 * under BENCH_DIR between runs) and the generator of the users/projects/tasks database in the schema
 * of migrations/ (bench:backup, bench:load and bench:soak use the same data), and the report's helpers (its
 * Markdown frame, percentiles, machine facts, CPU time).
 */
import { spawn } from 'node:child_process';
import console from 'node:console';
import http from 'node:http';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, cpus, loadavg, totalmem, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { clearInterval, clearTimeout, setInterval, setTimeout as sleepCb } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { LocalCluster } from '../dist/embedded/local-cluster.js';

export const ROOT = resolve(import.meta.dirname, '..');
export const CLI = join(ROOT, 'bin', 'pg-maintd.js');
/** bench/daemon-probe.mjs as a URL for `node --import` (the daemon's event-loop lag and forced GCs). */
export const PROBE = pathToFileURL(join(ROOT, 'bench', 'daemon-probe.mjs')).href;
export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
const GEN_VERSION = 'pgmaintd-bench v2'; // v2: the schema of migrations/

export function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}

/**
 * The command line: node:util's parseArgs with `options` (plus -h/--help, which prints `help` and
 * exits 0); an unknown or malformed option fails with its message and the usage. Returns the values.
 */
export function parseOptions(help, options) {
  let values;
  try {
    ({ values } = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    fail(`${err.message}\n\n${help}`);
  }
  if (values.help) {
    process.stdout.write(help);
    process.exit(0);
  }
  return values;
}

/** Option `--name` as a number from `lo` to `hi` (a whole one when `integer`), `def` when `raw` is unset. */
export function num(name, raw, def, lo, hi, integer = false) {
  const v = Number(raw ?? def);
  if (!(Number.isFinite(v) && v >= lo && v <= hi && (!integer || Number.isInteger(v))))
    fail(`--${name} must be ${integer ? 'an integer' : 'a number'} from ${lo} to ${hi}, got ${raw}`);
  return v;
}

/** A benchmark's Markdown report: heading, table, details as a list, the targets, then any `notes` lines. */
export function reportText(heading, table, details, targets, notes = []) {
  return [
    '',
    heading,
    '',
    ...table,
    '',
    ...details.map((d) => `- ${d}`),
    '',
    'Targets:',
    ...targets,
    '',
    ...notes,
  ].join('\n');
}

export const log = (msg) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

const cleanups = [];
/** Child processes started in their own process group (spawn with detached: true). */
export const liveChildren = new Set();
/** Running load generators (anything with stop()). */
export const liveLoads = new Set();
let cleaningUp;
let killWaitMs = 5000;

/** How long children get to exit after SIGTERM before SIGKILL (a draining daemon needs its grace). */
export function setKillWait(ms) {
  killWaitMs = ms;
}

export function onCleanup(fn) {
  cleanups.push(fn);
}

export async function cleanup() {
  cleaningUp ??= (async () => {
    for (const load of liveLoads) load.stop();
    for (const child of liveChildren) killGroup(child, 'SIGTERM');
    const until = Date.now() + killWaitMs;
    while ([...liveChildren].some((c) => c.exitCode === null && c.signalCode === null)) {
      if (Date.now() > until) {
        for (const child of liveChildren) killGroup(child, 'SIGKILL');
        break;
      }
      await sleep(100);
    }
    while (cleanups.length) {
      const fn = cleanups.pop();
      try {
        await fn();
      } catch (err) {
        console.error(`bench: cleanup step failed: ${err.message}`);
      }
    }
  })();
  return cleaningUp;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (cleaningUp) return;
    console.error(`\nbench: ${sig}: stopping what the benchmark started...`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}

/** Children run in their own process group, so a pipeline (bash, pg_dump, gzip) stops as one. */
export function killGroup(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Runs a benchmark's main(): a failure exits 1 with its stack (unless Ctrl-C caused it), and cleanup always runs. */
export async function runBench(main) {
  try {
    await main();
  } catch (err) {
    if (!cleaningUp) {
      console.error(`bench: ${err.stack ?? err}`);
      process.exitCode = 1;
    } // else Ctrl-C: the failure is the interruption itself
  } finally {
    await cleanup();
  }
}

/** Calls `onLine` with each JSON log line a child writes (pg-maintd with LOG_FORMAT=json); other lines are skipped. */
export function onJsonLines(stream, onLine) {
  let partial = '';
  stream.on('data', (d) => {
    partial += d;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      if (!line.startsWith('{')) continue;
      let parsed;
      try {
        parsed = JSON.parse(line);
      } catch {
        continue;
      }
      onLine(parsed);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Processes: run, wait for log lines, sample peak RSS (VmHWM) of the whole tree
// ---------------------------------------------------------------------------------------------

function readStatus(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(s);
    return { name: /^Name:\s+(.*)$/m.exec(s)?.[1] ?? '?', kb: hwm ? Number(hwm[1]) : 0 };
  } catch {
    return undefined;
  }
}

export function childPids(pid) {
  const out = [];
  let tasks = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' '))
        if (c.trim()) out.push(Number(c));
    } catch {
      // thread gone, or no children file
    }
  }
  return out;
}

/**
 * Polls VmHWM (the kernel's peak RSS of a process) and the CPU time of a process and all its
 * descendants. Both only grow, so the last sample before exit is the value up to the last interval.
 */
export class TreeSampler {
  peaks = new Map(); // `${pid}:${name}` -> { pid, name, kb, cpuS }
  #timer;
  constructor(rootPid, everyMs = 50) {
    this.rootPid = rootPid;
    this.sample();
    this.#timer = setInterval(() => this.sample(), everyMs);
  }
  sample() {
    const queue = [this.rootPid];
    const seen = new Set();
    while (queue.length) {
      const pid = queue.shift();
      if (seen.has(pid)) continue;
      seen.add(pid);
      const st = readStatus(pid);
      if (!st) continue;
      const key = `${pid}:${st.name}`;
      const prev = this.peaks.get(key);
      const cpuS = Math.max(prev?.cpuS ?? 0, cpuSeconds(pid) || 0);
      this.peaks.set(key, { pid, name: st.name, kb: Math.max(prev?.kb ?? 0, st.kb), cpuS });
      queue.push(...childPids(pid));
    }
  }
  stop() {
    clearInterval(this.#timer);
  }
  /** Peak RSS in MiB of the root process. */
  get rootMiB() {
    return (
      Math.max(0, ...[...this.peaks.values()].filter((p) => p.pid === this.rootPid).map((p) => p.kb)) / 1024
    );
  }
  /**
   * CPU seconds of the processes with this name, as last sampled (up to one interval short of what
   * each used by its exit), or undefined when none ran.
   */
  cpuByName(name) {
    const xs = [...this.peaks.values()].filter((p) => p.name === name);
    return xs.length ? xs.reduce((a, p) => a + p.cpuS, 0) : undefined;
  }
  /** Largest peak RSS in MiB among processes with this name. */
  byName(name) {
    const kbs = [...this.peaks.values()].filter((p) => p.name === name).map((p) => p.kb);
    return kbs.length ? Math.max(...kbs) / 1024 : undefined;
  }
}

/** Starts a command in its own process group, sampling the tree's RSS; collects output. */
export function startProcess(cmd, args, { env, cwd = ROOT, sampleMs = 50 } = {}) {
  const child = spawn(cmd, args, { env, cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);
  const t0 = performance.now();
  const sampler = new TreeSampler(child.pid, sampleMs);
  let stdout = '';
  let stderr = '';
  const lines = [];
  const waiters = [];
  child.stdout.on('data', (d) => (stdout += d));
  onJsonLines(child.stdout, (line) => {
    lines.push(line);
    for (const w of waiters.splice(0)) w();
  });
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-20000)));
  const exited = new Promise((resolve) => {
    child.on('error', (err) => {
      stderr += `\n${err.message}`;
    });
    child.on('close', (code, signal) => {
      sampler.stop();
      liveChildren.delete(child);
      for (const w of waiters.splice(0)) w();
      resolve({ code, signal, wallS: (performance.now() - t0) / 1000 });
    });
  });
  return {
    child,
    sampler,
    exited,
    lines,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    /** Resolves with the first JSON log line matching `pred`, with the time it was seen. */
    waitForLog(pred, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = sleepCb(
          () =>
            reject(new Error(`log line not seen within ${timeoutMs} ms\n${stdout.slice(-3000)}${stderr}`)),
          timeoutMs,
        );
        const check = () => {
          const hit = lines.find(pred);
          if (hit) {
            clearTimeout(timer);
            resolve({ line: hit, at: performance.now() });
          } else if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer);
            reject(new Error(`process exited before the log line\n${stdout.slice(-3000)}${stderr}`));
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}

/** Runs a command to the end with a hard time limit; throws with its output if it fails. */
export async function runMeasured(label, cmd, args, opts = {}) {
  const proc = startProcess(cmd, args, opts);
  const limit = sleepCb(
    () => {
      log(`${label}: over the time limit, killing it`);
      killGroup(proc.child, 'SIGKILL');
    },
    opts.timeoutMs ?? 60 * 60_000,
  );
  const r = await proc.exited;
  clearTimeout(limit);
  if (r.code !== 0)
    throw new Error(
      `${label} failed (${r.signal ?? `exit ${r.code}`}):\n${proc.stdout.slice(-3000)}\n${proc.stderr.slice(-3000)}`,
    );
  return { ...r, proc };
}

/** pigz, installed with apt-get when missing and we may; false when it cannot be had. */
export async function ensurePigz() {
  const has = () => existsSync('/usr/bin/pigz') || existsSync('/bin/pigz');
  if (has()) return true;
  if (userInfo().uid !== 0 || !existsSync('/usr/bin/apt-get')) {
    log('pigz is not installed (and apt-get is not usable here): the pigz row is skipped');
    return false;
  }
  log('pigz is not installed: apt-get update && apt-get install -y pigz');
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    await sh('apt-get', ['update', '-qq'], { env });
    await sh('apt-get', ['install', '-y', '-qq', 'pigz'], { env });
  } catch (err) {
    log(`installing pigz failed, the pigz row is skipped: ${err.message.split('\n')[0]}`);
  }
  return has();
}

/** Runs a short command, returning stdout. */
export function sh(cmd, args, { env = process.env, uidGid, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd, ...(uidGid ?? {}), stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      liveChildren.delete(child);
      if (code === 0) resolve(out);
      else
        reject(
          new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${(err || out).trim().slice(-2000)}`),
        );
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL cluster: persistent (reused) or LocalCluster (throwaway)
// ---------------------------------------------------------------------------------------------

/** Settings for fast generation and quiet measurements (on top of LocalCluster's fsync=off etc.). */
export const BENCH_SETTINGS = {
  shared_buffers: "'256MB'",
  max_wal_size: "'8GB'",
  checkpoint_timeout: "'1h'",
  wal_level: 'minimal',
  max_wal_senders: 0,
  autovacuum: 'off', // generation ends with VACUUM ANALYZE; no autovacuum run during a measurement
};

/** One benchmark at a time per cluster folder: a second one would stop the first one's server under it. */
function lockFolder(dir) {
  const file = join(dir, 'bench.lock');
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (pid && pid !== process.pid) {
      let alive = true;
      try {
        process.kill(pid, 0);
      } catch (err) {
        alive = err.code === 'EPERM';
      }
      if (alive)
        fail(
          `another benchmark (pid ${pid}) is using the cluster in ${dir}; wait for it, or give --dir / BENCH_DIR another folder`,
        );
    }
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  writeFileSync(file, `${process.pid}\n`);
  return () => rmSync(file, { force: true });
}

/**
 * The benchmark's cluster (LocalCluster, from dist/): in a folder that outlives the run (--dir), so a
 * generated database is reused, or in a temp folder that goes with it (--fresh).
 */
export async function startCluster(opts) {
  if (!opts.fresh) mkdirSync(opts.dir, { recursive: true });
  const unlock = opts.fresh ? () => undefined : lockFolder(opts.dir);
  const cluster = new LocalCluster({ settings: BENCH_SETTINGS, ...(opts.fresh ? {} : { dir: opts.dir }) });
  onCleanup(async () => {
    try {
      await cluster.stop();
    } finally {
      unlock();
    }
    if (!opts.fresh) log(`cluster stopped; its data stays in ${cluster.dataDir} for the next run`);
  });
  await cluster.start();
  log(
    `${opts.fresh ? 'throwaway cluster' : 'cluster'} in ${cluster.dir} (PostgreSQL ${cluster.binaries.major}), port ${cluster.port}`,
  );
  return cluster;
}

/** A URL without the password (it travels in PGPASSWORD), as an operator would configure it. */
export const dbUrl = (cluster, db) => `postgresql://${cluster.user}@127.0.0.1:${cluster.port}/${db}`;

/** The postmaster's pid, from postmaster.pid in the data folder; undefined while the server is stopped. */
export function postmasterPid(cluster) {
  try {
    return Number(readFileSync(join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) || undefined;
  } catch {
    return undefined;
  }
}

export async function connect(cluster, database = 'postgres') {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: cluster.port,
    user: cluster.user,
    password: cluster.password,
    database,
  });
  client.on('error', () => undefined); // a server stopped under it (Ctrl-C) fails the query in flight instead
  await client.connect();
  return client;
}

// ---------------------------------------------------------------------------------------------
// Data: the seed's users/projects/tasks, text that compresses like real text
// ---------------------------------------------------------------------------------------------

const WORDS = `the a an and or but of to in on for with by from at as into over after before under
between through during without within about against among across behind beyond toward upon
account action activity address admin agent alert analysis api app approval archive asset audit
backend backlog balance bank batch billing board branch browser budget bug build bundle button
cache calendar campaign card cart case catalog change channel chart check client cloud cluster
code column comment commit company config connection contact container content contract copy cost
customer dashboard data database date deadline default delivery demo deploy design detail device
dialog discount document domain draft email endpoint engine error estimate event export feature
feedback field file filter fix flow folder form format framework function gateway goal graph group
guide handler header health help history host icon image import incident index input integration
invoice issue item job key label language layout lead level library limit link list load locale
lock log login logo manager map market master media meeting memory menu message metric migration
mobile model module monitor network node note notification number offer office onboarding order
owner package page panel parser partner password payment performance permission phase pipeline plan
platform plugin policy pool portal post price print priority process product profile project
prompt proposal provider query queue quote rate record refund region release report request
research resource response result review role route rule sales schedule schema screen script search
section security server service session setting setup shipment signup site sprint stage status
storage store stream style subscription summary support survey sync system table tag target task
team template tenant test theme thread ticket timeline token tool tracking traffic transaction
update upload usage user vendor version video view warehouse webhook widget window workflow
workspace add adjust allow analyze approve assign build check clean close collect compare configure
confirm create debug define delete deliver deploy design document draft enable ensure estimate
evaluate export extend finalize fix handle implement improve include install integrate investigate
launch migrate monitor move optimize prepare publish reduce refactor remove rename replace research
resolve restore review rewrite run schedule send ship simplify split support test track train
translate update upgrade validate verify write active annual broken careful clear critical current
daily detailed different early easy empty final first full general global important initial
internal large late legacy local main major manual minor missing mobile monthly new next old open
optional partial pending previous primary private public quick ready recent regular remote required
secure shared short simple slow small stable standard strong temporary total unique urgent weekly
quickly slowly again already also always carefully correctly currently finally instead later
manually never often only properly soon still together usually when where why how which while`
  .split(/\s+/)
  .filter(Boolean);

const FIRST = `James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard
Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony
Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth
Carol Kevin Amanda Brian Dorothy George Melissa Timothy Deborah Ronald Stephanie Edward Rebecca Jason
Sharon Jeffrey Laura Ryan Cynthia Jacob Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna
Stephen Brenda Larry Pamela Justin Emma Scott Nicole Brandon Helen Benjamin Samantha Samuel Katherine
Lukas Sofia Mateo Yuki Hiroshi Wei Mei Arjun Priya Olga Ivan Fatima Omar Chloe Lucas Noah Mia`
  .split(/\s+/)
  .filter(Boolean);

const LAST = `Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez
Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green
Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz
Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan
Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood
James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster
Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Tanaka Suzuki Sato Chen
Wang Li Zhang Liu Singh Kumar Ivanov Petrov Novak Kowalski Rossi Russo Ferrari Dubois Laurent Silva`
  .split(/\s+/)
  .filter(Boolean);

const PHRASES = 65536;

/** Deterministic PRNG (mulberry32), so every generated database has the same phrase pool. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function phrasePool() {
  const rnd = prng(20240601);
  const out = [];
  for (let i = 0; i < PHRASES; i++) {
    const n = 5 + Math.floor(rnd() * 12);
    const words = [];
    for (let k = 0; k < n; k++) words.push(WORDS[Math.floor(rnd() * WORDS.length)]);
    out.push(words.join(' '));
  }
  return out;
}

/** A pseudo-random non-negative int4 from a bigint key expression and a salt (deterministic). */
const R = (key, salt) => `(hashint8((${key}) * 64 + ${salt}) & 2147483647)`;
const T0 = "timestamptz '2020-01-01 00:00:00+00'";

/** One chunk: U users, P projects, T tasks, in one transaction; `c` makes keys and emails unique. */
function chunkSql(c, { users: U, projects: P, tasks: T }) {
  const uk = `(${c}::bigint * 100000000 + cu.n)`;
  const pk = `(${c}::bigint * 100000000 + cp.n)`;
  const tk = `(${c}::bigint * 100000000 + g)`;
  return [
    `CREATE TEMP TABLE cu ON COMMIT DROP AS SELECT g AS n, gen_random_uuid() AS id FROM generate_series(1, ${U}) g`,
    `CREATE TEMP TABLE cp ON COMMIT DROP AS SELECT g AS n, gen_random_uuid() AS id FROM generate_series(1, ${P}) g`,
    `INSERT INTO users (id, email, password_hash, first_name, last_name, role, created_at, updated_at, last_login)
     SELECT cu.id,
            lower(f.w) || '.' || lower(l.w) || '.' || ${c} || '.' || cu.n || '@' ||
              (ARRAY['gmail.com','outlook.com','example.com','acme.io','company.org','yahoo.com','proton.me'])[1 + ${R(uk, 1)} % 7],
            '$2b$10$' || translate(substr(encode(sha512(int8send(${uk})), 'base64'), 1, 53), '+/', './'),
            f.w, l.w,
            (ARRAY['user','user','user','user','user','user','manager','manager','admin','viewer'])[1 + ${R(uk, 2)} % 10],
            ts.created,
            ts.created + (${R(uk, 3)} % 8640000) * interval '1 second',
            CASE WHEN ${R(uk, 4)} % 7 = 0 THEN NULL
                 ELSE ts.created + (${R(uk, 5)} % 31536000) * interval '1 second' END
       FROM cu
       CROSS JOIN LATERAL (SELECT ${T0} + (${R(uk, 6)} % 94608000) * interval '1 second' AS created) ts
       JOIN bench_first f ON f.n = ${R(uk, 7)} % ${FIRST.length}
       JOIN bench_last l ON l.n = ${R(uk, 8)} % ${LAST.length}`,
    `INSERT INTO projects (id, user_id, name, description, status, settings, created_at, updated_at)
     SELECT cp.id, cu.id,
            initcap(split_part(p1.p, ' ', 1)) || ' ' || initcap(split_part(p1.p, ' ', 2)) || ' ' ||
              (ARRAY['Platform','Portal','API','Migration','Dashboard','Redesign','Rollout','Integration'])[1 + ${R(pk, 1)} % 8],
            CASE WHEN ${R(pk, 2)} % 6 = 0 THEN NULL ELSE p2.p || '. ' || p3.p || '.' END,
            (ARRAY['active','active','active','active','paused','archived','completed'])[1 + ${R(pk, 3)} % 7],
            jsonb_build_object(
              'visibility', (ARRAY['private','team','public'])[1 + ${R(pk, 4)} % 3],
              'color', '#' || substr(md5(${pk}::text), 1, 6),
              'notifications', jsonb_build_object('email', ${R(pk, 5)} % 2 = 0, 'slack', ${R(pk, 6)} % 3 = 0),
              'default_view', (ARRAY['board','list','timeline','calendar'])[1 + ${R(pk, 7)} % 4],
              'sprint_length_days', (ARRAY[7,14,14,21])[1 + ${R(pk, 8)} % 4]),
            ts.created, ts.created + (${R(pk, 9)} % 15552000) * interval '1 second'
       FROM cp
       JOIN cu ON cu.n = 1 + ${R(pk, 10)} % ${U}
       CROSS JOIN LATERAL (SELECT ${T0} + (${R(pk, 11)} % 94608000) * interval '1 second' AS created) ts
       JOIN bench_phrases p1 ON p1.n = ${R(pk, 12)} % ${PHRASES}
       JOIN bench_phrases p2 ON p2.n = ${R(pk, 13)} % ${PHRASES}
       JOIN bench_phrases p3 ON p3.n = ${R(pk, 14)} % ${PHRASES}`,
    `INSERT INTO tasks (project_id, title, description, status, priority, assigned_to, due_date, metadata, created_at, updated_at)
     SELECT cp.id,
            upper(left(p1.p, 1)) || substr(p1.p, 2, 18 + ${R(tk, 1)} % 60),
            CASE ${R(tk, 2)} % 10
              WHEN 0 THEN NULL
              WHEN 1 THEN p2.p || '.'
              WHEN 2 THEN p2.p || '. ' || p3.p || '. See https://git.example.com/' || split_part(p4.p, ' ', 1) ||
                          '/commit/' || substr(md5(${tk}::text), 1, 12)
              WHEN 3 THEN p2.p || ', ' || p3.p || '.' || E'\\n' || 'Error ' || substr(md5(${tk}::text || 'e'), 1, 8) ||
                          ' in ' || split_part(p4.p, ' ', 2) || '_' || split_part(p4.p, ' ', 3) || '.ts:' || (${R(tk, 3)} % 900 + 10)
              ELSE p2.p || '. ' || p3.p || '. ' || p4.p || '.'
            END,
            (ARRAY['pending','pending','in_progress','in_progress','review','done','done','done','blocked'])[1 + ${R(tk, 4)} % 9],
            (ARRAY['low','medium','medium','medium','high','high','urgent'])[1 + ${R(tk, 5)} % 7],
            CASE WHEN ${R(tk, 6)} % 8 = 0 THEN NULL ELSE cu.id END,
            CASE WHEN ${R(tk, 7)} % 5 = 0 THEN NULL
                 ELSE date_trunc('day', ts.created) + (${R(tk, 8)} % 120 + 1) * interval '1 day' END,
            jsonb_build_object(
              'estimate_hours', ${R(tk, 9)} % 40 + 1,
              'story_points', (ARRAY[1,2,3,5,8,13])[1 + ${R(tk, 10)} % 6],
              'labels', jsonb_build_array(split_part(p4.p, ' ', 1), split_part(p4.p, ' ', 3)),
              'source', (ARRAY['web','api','email','import','slack'])[1 + ${R(tk, 11)} % 5],
              'external_id', 'PRJ-' || (${R(tk, 12)} % 100000)),
            ts.created, ts.created + (${R(tk, 13)} % 2592000) * interval '1 second'
       FROM generate_series(1, ${T}) g
       JOIN cp ON cp.n = 1 + ${R(tk, 14)} % ${P}
       JOIN cu ON cu.n = 1 + ${R(tk, 15)} % ${U}
       CROSS JOIN LATERAL (SELECT ${T0} + (${R(tk, 16)} % 94608000) * interval '1 second' AS created) ts
       JOIN bench_phrases p1 ON p1.n = ${R(tk, 17)} % ${PHRASES}
       JOIN bench_phrases p2 ON p2.n = ${R(tk, 18)} % ${PHRASES}
       JOIN bench_phrases p3 ON p3.n = ${R(tk, 19)} % ${PHRASES}
       JOIN bench_phrases p4 ON p4.n = ${R(tk, 20)} % ${PHRASES}`,
  ];
}

/** Rows per chunk: about 1/40 of the largest database, so the size lands within a few %. */
export function chunkShape(maxBytes) {
  const tasks = Math.max(2000, Math.min(100_000, Math.round(maxBytes / 560 / 40)));
  return {
    tasks,
    projects: Math.max(20, Math.round(tasks / 25)),
    users: Math.max(10, Math.round(tasks / 100)),
  };
}

async function dbState(admin, name) {
  const r = await admin.query(
    `SELECT pg_database_size(oid)::bigint AS bytes, shobj_description(oid, 'pg_database') AS comment
       FROM pg_database WHERE datname = $1`,
    [name],
  );
  if (!r.rows.length) return undefined;
  const m = /^pgmaintd-bench v\d+ chunks=(\d+)( vacuumed)?$/.exec(r.rows[0].comment ?? '');
  return {
    bytes: Number(r.rows[0].bytes),
    ours: !!m && (r.rows[0].comment ?? '').startsWith(GEN_VERSION),
    chunks: m ? Number(m[1]) : 0,
    vacuumed: !!m?.[2],
  };
}

/**
 * Makes database `name` about `target` bytes: reuses it when it is ours and the size is right,
 * continues an interrupted generation, or creates it (as a copy of `template` when that is smaller).
 */
export async function ensureDatabase(cluster, name, target, shape, template) {
  const admin = await connect(cluster);
  try {
    let state = await dbState(admin, name);
    const low = target * 0.97;
    if (state && (!state.ours || state.bytes > target * 1.1)) {
      log(`${name}: not a usable benchmark database (${fmtGiB(state.bytes)} GiB); dropping it`);
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
      state = undefined;
    }
    if (state?.vacuumed && state.bytes >= low) {
      log(`${name}: reusing (${fmtGiB(state.bytes)} GiB, ${state.chunks} chunks)`);
      return state.bytes;
    }
    if (!state) {
      const tpl = template ? await dbState(admin, template) : undefined;
      if (tpl?.ours && tpl.vacuumed && tpl.bytes <= target) {
        log(`${name}: copying ${template} (${fmtGiB(tpl.bytes)} GiB) as the start`);
        const strategy = (await admin.query('SHOW server_version_num')).rows[0].server_version_num >= 150000;
        await admin.query(
          `CREATE DATABASE ${name} TEMPLATE ${template}${strategy ? ' STRATEGY = FILE_COPY' : ''}`,
        );
        await admin.query(`COMMENT ON DATABASE ${name} IS '${GEN_VERSION} chunks=${tpl.chunks}'`);
      } else {
        await admin.query(`CREATE DATABASE ${name}`);
        // the application's schema, as pg-maintd's own migrations make it
        await sh(process.execPath, [CLI, 'migrate', 'up'], { env: cliEnv(cluster, name) });
        await admin.query(`COMMENT ON DATABASE ${name} IS '${GEN_VERSION} chunks=0'`);
      }
      state = await dbState(admin, name);
    }
    const db = await connect(cluster, name);
    try {
      await db.query(`CREATE TEMP TABLE bench_phrases (n int PRIMARY KEY, p text NOT NULL);
                      CREATE TEMP TABLE bench_first (n int PRIMARY KEY, w text NOT NULL);
                      CREATE TEMP TABLE bench_last (n int PRIMARY KEY, w text NOT NULL);`);
      const fill = (table, values) =>
        db.query(`INSERT INTO ${table} SELECT i - 1, v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, i)`, [
          values,
        ]);
      await fill('bench_phrases', phrasePool());
      await fill('bench_first', FIRST);
      await fill('bench_last', LAST);
      await db.query('ANALYZE bench_phrases; ANALYZE bench_first; ANALYZE bench_last');
      let { bytes, chunks } = state;
      const t0 = performance.now();
      const startBytes = bytes;
      let lastReport = 0;
      log(
        `${name}: generating ${fmtGiB(target)} GiB from ${fmtGiB(bytes)} GiB (${shape.tasks} tasks a chunk)`,
      );
      while (bytes < low) {
        const c = chunks + 1;
        await db.query('BEGIN');
        for (const stmt of chunkSql(c, shape)) await db.query(stmt);
        await db.query(`COMMENT ON DATABASE ${name} IS '${GEN_VERSION} chunks=${c}'`);
        await db.query('COMMIT');
        chunks = c;
        bytes = Number((await db.query('SELECT pg_database_size(current_database()) AS b')).rows[0].b);
        const done = (bytes - startBytes) / Math.max(1, target - startBytes);
        if (done - lastReport >= 0.1 || bytes >= low) {
          lastReport = done;
          const s = (performance.now() - t0) / 1000;
          log(`${name}: ${fmtGiB(bytes)} / ${fmtGiB(target)} GiB, chunk ${c}, ${s.toFixed(0)} s`);
        }
      }
      log(`${name}: VACUUM (FREEZE, ANALYZE)`);
      await db.query('VACUUM (FREEZE, ANALYZE)');
      await db.query('CHECKPOINT');
      await db.query(`COMMENT ON DATABASE ${name} IS '${GEN_VERSION} chunks=${chunks} vacuumed'`);
      bytes = Number((await db.query('SELECT pg_database_size(current_database()) AS b')).rows[0].b);
      log(`${name}: ready, ${fmtGiB(bytes)} GiB in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      return bytes;
    } finally {
      await db.end().catch(() => undefined);
    }
  } finally {
    await admin.end();
  }
}

export async function tableCounts(cluster, name) {
  const db = await connect(cluster, name);
  try {
    const r = await db.query(
      `SELECT relname AS t, reltuples::bigint AS n, pg_total_relation_size(oid) AS b FROM pg_class
        WHERE relname IN ('users','projects','tasks') AND relkind = 'r' ORDER BY relname`,
    );
    return r.rows.map((x) => `${x.t} ${Number(x.n).toLocaleString('en-US')} rows ${fmtMB(Number(x.b))} MB`);
  } finally {
    await db.end();
  }
}

/** Reads the database's files once, so the first measured case does not pay for a cold page cache. */
export async function warmCache(cluster, name) {
  const admin = await connect(cluster);
  try {
    const oid = (await admin.query('SELECT oid FROM pg_database WHERE datname = $1', [name])).rows[0].oid;
    await sh('bash', ['-c', 'cat -- "$1"/* > /dev/null', 'warm', join(cluster.dataDir, 'base', String(oid))]);
  } finally {
    await admin.end();
  }
}

// ---------------------------------------------------------------------------------------------

export function cliEnv(cluster, db, extra) {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    LOG_FORMAT: 'json',
    DATABASE_URL: dbUrl(cluster, db),
    PGPASSWORD: cluster.password,
    DB_SSL_MODE: 'disable',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    ...extra,
  };
}

/** The libpq environment a shell pipeline (pg_dump, psql, pg_restore) gets: the password never in its arguments. */
export function pgEnv(cluster, db, extra) {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    PGHOST: '127.0.0.1',
    PGPORT: String(cluster.port),
    PGUSER: cluster.user,
    PGPASSWORD: cluster.password,
    PGDATABASE: db,
    ...extra,
  };
}

/**
 * s3rver (the npm package) on a free loopback port in this process, with an empty bucket: `s3` is a
 * client for the benchmark itself, `env` what pg-maintd needs to use the bucket. close() (also run at
 * cleanup) stops it and removes its folder under `work`.
 */
export async function startS3rver(work, bucket = 'pgmaintd-bench') {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'; // the client runs in this process
  const { default: S3rver } = await import('s3rver');
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const directory = mkdtempSync(join(work, 's3rver-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const s3 = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    s3.destroy();
    await server.close();
    rmSync(directory, { recursive: true, force: true });
  };
  onCleanup(close);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const env = {
    S3_BUCKET: bucket,
    S3_ENDPOINT: endpoint,
    S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_REGION: 'us-east-1',
  };
  return { s3, bucket, endpoint, env, close };
}

/** Cron (with seconds, UTC) for the single second `at`. */
export function cronAt(at) {
  return `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} ${at.getUTCDate()} ${at.getUTCMonth() + 1} *`;
}

export const fmtGiB = (b) => (b / GiB).toFixed(2);
export const fmtMB = (b) => (b / 1e6).toFixed(1);
export const fmt = (x, d = 2) => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(d));
export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export function machineFacts() {
  const model =
    /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? '?';
  return {
    nproc: availableParallelism(),
    cpu: model.trim(),
    memGiB: +(totalmem() / GiB).toFixed(1),
    node: process.version,
  };
}

/** Logs the machine and its load average at the start of a run; returns both for the report. */
export function logMachine() {
  const facts = machineFacts();
  const loadAtStart = loadavg();
  log(
    `machine: ${facts.nproc} cores, ${facts.cpu}, ${facts.memGiB} GiB RAM, node ${facts.node}; load average ${loadAtStart.map((v) => v.toFixed(2)).join(' ')}`,
  );
  return { facts, loadAtStart };
}

/** The commit measured, and whether src/ had uncommitted changes when dist/ was built. */
export async function codeVersion() {
  try {
    const head = (await sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])).trim();
    const dirty = (await sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'])).trim();
    return dirty ? `${head} + uncommitted changes in src/` : head;
  } catch {
    return 'unknown (no git)';
  }
}

// ---------------------------------------------------------------------------------------------
// CPU time of process trees; HTTP: one request with a time limit; autocannon runs
// ---------------------------------------------------------------------------------------------

/** utime + stime (and, with `reaped`, cutime + cstime) of a process in seconds (USER_HZ 100), or NaN. */
export function cpuSeconds(pid, reaped = false) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const v = st
      .slice(st.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    return (v[11] + v[12] + (reaped ? v[13] + v[14] : 0)) / 100;
  } catch {
    return NaN;
  }
}

/** CPU seconds of a process tree: every live process, plus what the root's reaped children used. */
export function treeCpu(root) {
  if (!root) return 0;
  let total = cpuSeconds(root, true) || 0;
  const queue = childPids(root);
  while (queue.length) {
    const pid = queue.shift();
    total += cpuSeconds(pid) || 0;
    queue.push(...childPids(pid));
  }
  return total;
}

/**
 * What the machine spent, and what this benchmark's own processes spent (this script, the exporters,
 * the PostgreSQL cluster), so a phase disturbed by other work on the machine can be flagged.
 */
export function machineCpu(roots) {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return {
    at: performance.now(),
    busy: (user + nice + system + irq + softirq + steal) / 100,
    steal: steal / 100,
    ours: cpuSeconds('self', true) + roots().reduce((sum, pid) => sum + treeCpu(pid), 0),
  };
}

/**
 * CPU seconds others used between two snapshots, and their share of all cores. Time the hypervisor
 * stole from this machine counts as others' unless `steal` is false.
 */
export function othersCpu(a, b, { steal = true } = {}) {
  const busy = b.busy - a.busy - (steal ? 0 : b.steal - a.steal);
  const cpuS = Math.max(0, busy - (b.ours - a.ours));
  return { cpuS, share: cpuS / (((b.at - a.at) / 1000) * availableParallelism()) };
}

/**
 * GET with a time limit (no Accept-Encoding, like autocannon: both exporters answer plain text).
 * Never throws: { ok, status, body, ms } or { ok: false, error, ms }.
 */
export function httpGet(url, agent, timeoutMs) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let settled = false;
    const done = (r) => {
      if (settled) return;
      settled = true;
      clearTimeout(limit);
      resolve({ ...r, ms: performance.now() - t0 });
    };
    const req = http.get(url, { agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        done({ ok: res.statusCode === 200, status: res.statusCode, body: Buffer.concat(chunks) }),
      );
      res.on('error', (err) => done({ ok: false, error: err.message }));
    });
    const limit = sleepCb(() => {
      done({ ok: false, error: 'timeout', timeout: true });
      req.destroy();
    }, timeoutMs);
    req.on('error', (err) => done({ ok: false, error: err.code ?? err.message }));
  });
}

/**
 * GETs `url` on one keep-alive connection every `everyMs` (a request still running when the next is
 * due delays it), passing each httpGet result to `onResult`, until stop() (which waits for the last).
 */
export function pollUrl(url, everyMs, timeoutMs, onResult) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      const t = performance.now();
      onResult(await httpGet(url, agent, timeoutMs));
      await sleep(Math.max(0, everyMs - (performance.now() - t)));
    }
    agent.destroy();
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function latencyStats(ms) {
  const s = Float64Array.from(ms).sort();
  return {
    n: s.length,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    p999: percentile(s, 99.9),
    max: s.length ? s[s.length - 1] : NaN,
  };
}

/**
 * One autocannon run. Latency percentiles come from the per-response times autocannon reports
 * (fractions of a millisecond; its own histogram rounds to whole milliseconds). `anyStatus`: count
 * every answer (the outage, where a 5xx is an answer too); otherwise only 2xx, as autocannon does.
 */
export async function cannon(url, { duration, connections, timeoutS, anyStatus = false }) {
  const ms = [];
  const load = autocannon({ url, connections, duration, timeout: timeoutS });
  liveLoads.add(load);
  load.on('response', (_client, status, _bytes, responseTime) => {
    if (anyStatus || (status >= 200 && status < 300)) ms.push(responseTime);
  });
  let res;
  try {
    res = await load;
  } finally {
    liveLoads.delete(load);
  }
  return {
    ...latencyStats(ms),
    seconds: res.duration,
    requests: res.requests.total,
    rps: res.requests.total / res.duration,
    non2xx: res.non2xx,
    errors: res.errors,
    timeouts: res.timeouts,
    statuses: Object.fromEntries(Object.entries(res.statusCodeStats).map(([k, v]) => [k, v.count])),
  };
}

// ---------------------------------------------------------------------------------------------
// The daemon: stop it, read its /metrics
// ---------------------------------------------------------------------------------------------

/** SIGTERM to a process started with startProcess, SIGKILL after `graceMs`; resolves when it is gone. */
export async function stopProcess(proc, graceMs = 30_000) {
  killGroup(proc.child, 'SIGTERM');
  let t;
  const gone = await Promise.race([
    proc.exited.then(() => true),
    new Promise((resolve) => (t = sleepCb(() => resolve(false), graceMs))),
  ]);
  clearTimeout(t);
  if (!gone) {
    killGroup(proc.child, 'SIGKILL');
    await proc.exited;
  }
  return !gone;
}

/**
 * Samples of the Prometheus text format: `{ name: [{ labels: 'a="b",...', value }] }` for the names
 * asked for (all when `names` is empty).
 */
export function parseMetrics(text, names = []) {
  const want = new Set(names);
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || (want.size && !want.has(m[1]))) continue;
    (out[m[1]] ??= []).push({ labels: m[2] ?? '', value: Number(m[3]) });
  }
  return out;
}

/** The sum of a metric's samples whose labels contain every `label="value"` given (NaN when absent). */
export function metricSum(parsed, name, ...labels) {
  const xs = (parsed[name] ?? []).filter((s) => labels.every((l) => s.labels.includes(l)));
  return xs.length ? xs.reduce((a, s) => a + s.value, 0) : NaN;
}

/**
 * Backup runs from the daemon's log: start and end in Date.now() ms (no end while running), the
 * outcome, and the dumped bytes of each progress line (every 5 s).
 */
export function backupRuns(lines) {
  const runs = new Map();
  for (const l of lines) {
    if (l.job !== 'backup' || !l.runId) continue;
    const at = Date.parse(l.time);
    if (l.msg === 'backup started') runs.set(l.runId, { start: at, progress: [] });
    const r = runs.get(l.runId);
    if (!r) continue;
    if (l.msg === 'backup progress') r.progress.push({ at, dumped: l.dumpedBytes });
    if (l.msg === 'backup complete')
      Object.assign(r, {
        end: at,
        ok: true,
        durationS: l.durationSeconds,
        bytes: l.sizeBytes,
        raw: l.dumpedBytes,
      });
    else if (/^backup failed/.test(l.msg)) Object.assign(r, { end: at, ok: false, error: l.err?.message });
  }
  return [...runs.values()];
}

/** Share of [from, to] during which a backup was running. */
export function coverage(runs, from, to) {
  let covered = 0;
  for (const r of runs) covered += Math.max(0, Math.min(r.end ?? Infinity, to) - Math.max(r.start, from));
  return covered / (to - from);
}

/** Dump bytes the backups streamed within [from, to], from their progress lines (±5 s at the edges). */
export function dumpedWithin(runs, from, to) {
  let bytes = 0;
  for (const r of runs) {
    const pts = [{ at: r.start, dumped: 0 }, ...r.progress];
    if (r.ok) pts.push({ at: r.end, dumped: r.raw });
    const before = pts.filter((p) => p.at <= from).pop() ?? pts[0];
    const inside = pts.filter((p) => p.at <= to).pop();
    if (inside && inside.at >= before.at) bytes += Math.max(0, inside.dumped - before.dumped);
  }
  return bytes;
}

/**
 * The probe's late ticks ([ms, cpuMs] pairs, bench/daemon-probe.mjs): how many, how many 50 ms or
 * more, and the share of their total delay the main thread spent running (own work) rather than
 * waiting for a core.
 */
export function lateSummary(late) {
  const ms = late.reduce((a, [d]) => a + d, 0);
  const cpu = late.reduce((a, [, c]) => a + (Number.isFinite(c) ? c : 0), 0);
  return {
    n: late.length,
    n50: late.filter(([d]) => d >= 50).length,
    ownShare: ms ? Math.min(1, cpu / ms) : NaN,
  };
}
