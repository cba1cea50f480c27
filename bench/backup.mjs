#!/usr/bin/env node
/**
 * `npm run bench:backup`: the backup pipeline against the seed's shell pipeline, side by side.
 *
 *   seed      pg_dump --clean --no-owner --no-privileges | gzip -6 > file
 *   pigz      the same with pigz -6
 *   dir       pg-maintd backup (the real CLI) to a local BACKUP_DIR
 *   s3        pg-maintd backup to an S3 test server (s3rver) on loopback
 *   dir 1/2   pg-maintd backup of a database half the size (peak RSS must not grow with size)
 *   run       pg-maintd run: a scheduled backup while /metrics is scraped in a loop
 *
 * The database (users/projects/tasks, the seed's shape) is generated once into a persistent cluster
 * under BENCH_DIR and reused by later runs. See bench/README.md.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem, userInfo } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { clearInterval, setInterval, setTimeout as sleepCb, clearTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, URL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { findServerBinaries } from '../dist/embedded/binaries.js';
import { LocalCluster, freePort } from '../dist/embedded/local-cluster.js';
import { fail, killGroup, liveChildren, log, onCleanup, onJsonLines, runBench } from './lib.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'; // s3rver's client runs in this process
const CLI = join(ROOT, 'bin', 'pg-maintd.js');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const GEN_VERSION = 'pgmaintd-bench v1';

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

const HELP = `usage: node bench/backup.mjs [--gb N] [--dir PATH] [--fresh] [--no-half] [--runs N]

  --gb N      database size in GiB (pg_database_size), default 2 (env BENCH_DB_GB)
  --dir PATH  persistent cluster folder, reused across runs, default /tmp/pgmaintd-bench (env BENCH_DIR)
  --fresh     throwaway cluster (LocalCluster, temp folder), nothing reused (env BENCH_FRESH=1)
  --no-half   skip the half-size database (the peak-RSS flatness point) (env BENCH_HALF=0)
  --runs N    repeat each measured case N times, report the median time (env BENCH_RUNS), default 1
`;

function options() {
  const { values } = parseArgs({
    options: {
      gb: { type: 'string' },
      dir: { type: 'string' },
      fresh: { type: 'boolean' },
      'no-half': { type: 'boolean' },
      runs: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const gb = Number(values.gb ?? process.env.BENCH_DB_GB ?? 2);
  const runs = Number(values.runs ?? process.env.BENCH_RUNS ?? 1);
  if (!(gb > 0 && gb <= 1024)) fail(`--gb / BENCH_DB_GB must be a number of GiB above 0, got ${gb}`);
  if (!(Number.isInteger(runs) && runs >= 1 && runs <= 20)) fail(`--runs must be 1..20, got ${runs}`);
  return {
    gb,
    runs,
    dir: values.dir ?? process.env.BENCH_DIR ?? '/tmp/pgmaintd-bench',
    fresh: values.fresh ?? process.env.BENCH_FRESH === '1',
    half: !(values['no-half'] ?? process.env.BENCH_HALF === '0'),
  };
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

function childPids(pid) {
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
 * Polls VmHWM (the kernel's peak RSS of a process) of a process and all its descendants. VmHWM only
 * grows, so the last sample before exit is the peak up to the last interval.
 */
class TreeSampler {
  peaks = new Map(); // `${pid}:${name}` -> { pid, name, kb }
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
      if (!prev || st.kb > prev.kb) this.peaks.set(key, { pid, name: st.name, kb: st.kb });
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
  /** Largest peak RSS in MiB among processes with this name. */
  byName(name) {
    const kbs = [...this.peaks.values()].filter((p) => p.name === name).map((p) => p.kb);
    return kbs.length ? Math.max(...kbs) / 1024 : undefined;
  }
}

/** Starts a command in its own process group, sampling the tree's RSS; collects output. */
function start(cmd, args, { env, cwd = ROOT, sampleMs = 50 } = {}) {
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
async function runMeasured(label, cmd, args, opts = {}) {
  const proc = start(cmd, args, opts);
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

/** Runs a short command, returning stdout. */
function sh(cmd, args, { env = process.env, uidGid, cwd } = {}) {
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
const BENCH_SETTINGS = {
  shared_buffers: "'256MB'",
  max_wal_size: "'8GB'",
  checkpoint_timeout: "'1h'",
  wal_level: 'minimal',
  max_wal_senders: 0,
  autovacuum: 'off', // generation ends with VACUUM ANALYZE; no autovacuum run during a measurement
};

/** The uid/gid the server runs as: ours, or the postgres user's when we are root. */
function serverOwner() {
  if (userInfo().uid !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) fail('running as root, but there is no postgres user to run PostgreSQL as');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * A cluster in a fixed folder that outlives the run, so a generated database is reused. The same
 * binaries and settings as LocalCluster (which always starts from an empty temp folder).
 */
class PersistentCluster {
  user = 'postgres';
  port = 0;
  password = '';
  constructor(dir) {
    this.dir = dir;
    this.binaries = findServerBinaries();
    this.owner = serverOwner();
  }
  get dataDir() {
    return join(this.dir, 'data');
  }
  #pg(bin, args) {
    return sh(join(this.binaries.binDir, bin), args, {
      uidGid: this.owner,
      cwd: this.dir,
      env: { ...process.env, LC_ALL: 'C' },
    });
  }
  #chown(path) {
    if (this.owner) chownSync(path, this.owner.uid, this.owner.gid);
  }
  async start() {
    mkdirSync(this.dir, { recursive: true });
    this.#chown(this.dir);
    const pwPath = join(this.dir, 'password');
    const versionFile = join(this.dataDir, 'PG_VERSION');
    const reusable =
      existsSync(pwPath) &&
      existsSync(versionFile) &&
      Number(readFileSync(versionFile, 'utf8').trim()) === this.binaries.major;
    if (reusable) {
      this.password = readFileSync(pwPath, 'utf8').trim();
      if (existsSync(join(this.dataDir, 'postmaster.pid'))) {
        // left running by an interrupted run of this benchmark: stop it, then start it on a new port
        await this.#pg('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', '-t', '60', 'stop']).catch(
          () => undefined,
        );
      }
      log(`reusing the cluster in ${this.dataDir} (PostgreSQL ${this.binaries.major})`);
    } else {
      log(`initdb into ${this.dataDir} (PostgreSQL ${this.binaries.major}, ${this.binaries.binDir})`);
      rmSync(this.dataDir, { recursive: true, force: true });
      this.password = randomBytes(12).toString('base64url');
      const pwfile = join(this.dir, 'pwfile.init');
      writeFileSync(pwfile, `${this.password}\n`, { mode: 0o600 });
      this.#chown(pwfile);
      try {
        await this.#pg('initdb', [
          '-D',
          this.dataDir,
          '-U',
          this.user,
          '--auth=scram-sha-256',
          `--pwfile=${pwfile}`,
          '--encoding=UTF8',
          '--locale=C',
          '--no-sync',
        ]);
      } finally {
        rmSync(pwfile, { force: true });
      }
      const settings = {
        listen_addresses: "'127.0.0.1'",
        unix_socket_directories: `'${this.dir}'`,
        max_connections: 50,
        fsync: 'off',
        synchronous_commit: 'off',
        full_page_writes: 'off',
        ...BENCH_SETTINGS,
      };
      const conf = join(this.dataDir, 'postgresql.conf');
      writeFileSync(
        conf,
        `${readFileSync(conf, 'utf8')}\n# pg-maintd benchmark\n${Object.entries(settings)
          .map(([k, v]) => `${k} = ${v}`)
          .join('\n')}\n`,
      );
      writeFileSync(pwPath, `${this.password}\n`, { mode: 0o600 }); // only once the cluster exists
    }
    this.port = await freePort();
    try {
      await this.#pg('pg_ctl', [
        '-D',
        this.dataDir,
        '-l',
        join(this.dir, 'server.log'),
        '-o',
        `-p ${this.port}`,
        '-w',
        '-t',
        '120',
        'start',
      ]);
    } catch (err) {
      const logFile = join(this.dir, 'server.log');
      const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
      throw new Error(`PostgreSQL failed to start: ${err.message}\n${tail}`);
    }
  }
  async stop() {
    if (!existsSync(join(this.dataDir, 'postmaster.pid'))) return;
    await this.#pg('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', '-t', '60', 'stop']);
  }
}

async function startCluster(opts) {
  if (opts.fresh) {
    const cluster = new LocalCluster({ settings: BENCH_SETTINGS });
    onCleanup(() => cluster.stop());
    await cluster.start();
    log(`throwaway cluster (LocalCluster) in ${cluster.dir}, port ${cluster.port}`);
    return cluster;
  }
  const cluster = new PersistentCluster(opts.dir);
  onCleanup(async () => {
    await cluster.stop();
    log(`cluster stopped; its data stays in ${cluster.dataDir} for the next run`);
  });
  await cluster.start();
  return cluster;
}

/** A URL without the password (it travels in PGPASSWORD), as an operator would configure it. */
const dbUrl = (cluster, db) => `postgresql://${cluster.user}@127.0.0.1:${cluster.port}/${db}`;

async function connect(cluster, database = 'postgres') {
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

const SCHEMA = `
CREATE TABLE users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email varchar(255) UNIQUE NOT NULL,
  password_hash varchar(255) NOT NULL,
  first_name varchar(100),
  last_name varchar(100),
  role varchar(50) DEFAULT 'user',
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  last_login timestamptz
);
CREATE TABLE projects (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid REFERENCES users(id) ON DELETE CASCADE,
  name varchar(255) NOT NULL,
  description text,
  status varchar(50) DEFAULT 'active',
  settings jsonb DEFAULT '{}',
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now()
);
CREATE TABLE tasks (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  project_id uuid REFERENCES projects(id) ON DELETE CASCADE,
  title varchar(255) NOT NULL,
  description text,
  status varchar(50) DEFAULT 'pending',
  priority varchar(20) DEFAULT 'medium',
  assigned_to uuid REFERENCES users(id),
  due_date timestamptz,
  metadata jsonb DEFAULT '{}',
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now()
);`;

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
function chunkShape(maxBytes) {
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
  const m = /^pgmaintd-bench v1 chunks=(\d+)( vacuumed)?$/.exec(r.rows[0].comment ?? '');
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
async function ensureDatabase(cluster, name, target, shape, template) {
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
        const db = await connect(cluster, name);
        try {
          await db.query(SCHEMA);
          await db.query(`COMMENT ON DATABASE ${name} IS '${GEN_VERSION} chunks=0'`);
        } finally {
          await db.end();
        }
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

async function tableCounts(cluster, name) {
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
async function warmCache(cluster, name) {
  const admin = await connect(cluster);
  try {
    const oid = (await admin.query('SELECT oid FROM pg_database WHERE datname = $1', [name])).rows[0].oid;
    await sh('bash', ['-c', 'cat -- "$1"/* > /dev/null', 'warm', join(cluster.dataDir, 'base', String(oid))]);
  } finally {
    await admin.end();
  }
}

// ---------------------------------------------------------------------------------------------
// The measured cases
// ---------------------------------------------------------------------------------------------

function cliEnv(cluster, db, extra) {
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

/** pg-maintd backup (one-shot CLI) into a fresh local directory. */
async function caseDaemonDir(cluster, db, work, label) {
  const dir = mkdtempSync(join(work, 'out-dir-'));
  const r = await runMeasured(label, process.execPath, [CLI, 'backup'], {
    env: cliEnv(cluster, db, { BACKUP_DIR: dir }),
  });
  const res = backupResult(label, r);
  // after the measurement: the file is a valid gzip stream (of members) of exactly what pg_dump wrote
  res.after = async () => {
    try {
      const raw = Number(
        (await sh('bash', ['-c', 'set -o pipefail; gzip -dc -- "$1" | wc -c', 'check', res.where])).trim(),
      );
      res.check =
        raw === res.rawBytes ? 'gunzip ok' : `MISMATCH: gunzip gives ${raw} bytes, dumped ${res.rawBytes}`;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  return res;
}

/** The seed guide's pipeline, with gzip or pigz. */
async function caseShell(cluster, db, work, compressor, label) {
  const out = join(work, `${compressor}.sql.gz`);
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    PGHOST: '127.0.0.1',
    PGPORT: String(cluster.port),
    PGUSER: cluster.user,
    PGPASSWORD: cluster.password,
    PGDATABASE: db,
    OUT: out,
  };
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
  const { default: S3rver } = await import('s3rver');
  const { S3Client, CreateBucketCommand, HeadObjectCommand } = await import('@aws-sdk/client-s3');
  const directory = mkdtempSync(join(work, 's3rver-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory });
  const { port } = await server.run();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await server.close();
    rmSync(directory, { recursive: true, force: true });
  };
  onCleanup(close);
  const endpoint = `http://127.0.0.1:${port}`;
  const s3 = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  try {
    const bucket = 'pgmaintd-bench';
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const r = await runMeasured(label, process.execPath, [CLI, 'backup'], {
      env: cliEnv(cluster, db, {
        S3_BUCKET: bucket,
        S3_ENDPOINT: endpoint,
        S3_FORCE_PATH_STYLE: 'true',
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
        AWS_REGION: 'us-east-1',
      }),
    });
    const res = backupResult(label, r);
    const key = res.where.replace(`s3://${bucket}/`, '');
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    res.check =
      head.ContentLength === res.bytes
        ? 'object size ok'
        : `MISMATCH: object ${head.ContentLength} bytes, manifest ${res.bytes}`;
    return res;
  } finally {
    s3.destroy();
    await close();
  }
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function latencyStats(ms) {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN };
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

/** Cron (with seconds, UTC) for the single second `at`. */
function cronAt(at) {
  return `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} ${at.getUTCDate()} ${at.getUTCMonth() + 1} *`;
}

/** pg-maintd run: its scheduled backup to a directory while /metrics is scraped in a loop. */
async function caseDaemonRun(cluster, db, work, label) {
  const dir = mkdtempSync(join(work, 'out-run-'));
  const at = new Date(Math.ceil((Date.now() + 8000) / 1000) * 1000);
  const proc = start(process.execPath, [CLI, 'run'], {
    env: cliEnv(cluster, db, {
      BACKUP_DIR: dir,
      BACKUP_SCHEDULE: cronAt(at),
      SCHEDULE_TZ: 'UTC',
      BACKUP_VERIFY_SCHEDULE: 'off',
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
    killGroup(proc.child, 'SIGTERM');
    const gone = await Promise.race([proc.exited.then(() => true), sleep(30_000).then(() => false)]);
    if (!gone) killGroup(proc.child, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

const fmtGiB = (b) => (b / GiB).toFixed(2);
const fmtMB = (b) => (b / 1e6).toFixed(1);
const fmt = (x, d = 2) => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(d));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Median wall time over runs; the largest RSS and the last run's other numbers. */
function combine(results) {
  const last = results[results.length - 1];
  return {
    ...last,
    wallS: median(results.map((r) => r.wallS)),
    walls: results.map((r) => r.wallS),
    rssMiB: Math.max(...results.map((r) => r.rssMiB ?? 0)),
  };
}

function machineFacts() {
  const model =
    /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model;
  return {
    nproc: availableParallelism(),
    cpu: model,
    memGiB: +(totalmem() / GiB).toFixed(1),
    node: process.version,
  };
}

async function main() {
  const opts = options();
  const t0 = performance.now();
  const facts = machineFacts();
  log(`machine: ${facts.nproc} cores, ${facts.cpu}, ${facts.memGiB} GiB RAM, node ${facts.node}`);

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

  const cases = {
    seed: [],
    pigz: [],
    dir: [],
    s3: [],
    half: [],
    halfS3: [],
    run: [],
  };
  const postmaster = Number(readFileSync(join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  /** Runs one case, notes how much CPU other processes on the machine took meanwhile, logs it. */
  const measure = async (name, title, fn) => {
    log(title);
    const before = cpuSnapshot(postmaster);
    const x = await fn();
    const after = cpuSnapshot(postmaster);
    x.cpuS = (after.ours - before.ours) / 100;
    x.other = otherCpu(before, after, facts.nproc);
    await x.after?.();
    cases[name].push(x);
    report(name, x);
  };
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
    await measure('dir', `pg-maintd backup -> dir${tag}`, () =>
      caseDaemonDir(cluster, fullDb, work, 'pg-maintd backup to dir'),
    );
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
  const daemonRss = [r.dir, r.s3, r.half, r.halfS3, r.run].filter(Boolean);
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

  const text = [
    '',
    `## pg-maintd backup benchmark (${new Date().toISOString().slice(0, 16)}Z)`,
    '',
    ...table,
    '',
    ...details.map((d) => `- ${d}`),
    '',
    'Targets:',
    ...targets,
    '',
    'MB = 10^6 bytes for output, MiB for RSS. Peak RSS: VmHWM of the pg-maintd node process (not pg_dump), or of gzip/pigz for the shell pipelines.',
    '',
  ].join('\n');
  process.stdout.write(text);
  if (!opts.fresh) {
    const file = join(opts.dir, 'last-results.md');
    writeFileSync(file, text);
    log(`results also in ${file}`);
  }
}

/** The commit measured, and whether src/ had uncommitted changes when dist/ was built. */
async function codeVersion() {
  try {
    const head = (await sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])).trim();
    const dirty = (await sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'])).trim();
    return dirty ? `${head} + uncommitted changes in src/` : head;
  } catch {
    return 'unknown (no git)';
  }
}

/** CPU time (USER_HZ ticks) of the machine, and of this process, its reaped children and the cluster. */
function cpuSnapshot(postmasterPid) {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  const proc = (pid) => {
    try {
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const v = st.slice(st.lastIndexOf(')') + 2).split(' ');
      return Number(v[11]) + Number(v[12]) + Number(v[13]) + Number(v[14]); // utime stime cutime cstime
    } catch {
      return 0;
    }
  };
  return {
    at: performance.now(),
    busy: user + nice + system + irq + softirq,
    steal,
    ours: proc('self') + proc(postmasterPid),
  };
}

/** CPU seconds other processes (not the benchmark, its children, or the cluster) used between a and b. */
function otherCpu(a, b, nproc) {
  const cpuS = Math.max(0, b.busy - a.busy - (b.ours - a.ours)) / 100;
  const wallS = (b.at - a.at) / 1000;
  return { cpuS, share: cpuS / (wallS * nproc), stealS: (b.steal - a.steal) / 100 };
}

function report(name, x) {
  log(
    `  ${name}: ${x.wallS.toFixed(1)} s, ${fmtMB(x.bytes)} MB, peak RSS ${fmt(x.rssMiB, 1)} MiB${x.rssNote ? ` (${x.rssNote})` : ''}, pg_dump ${fmt(x.pgDumpRssMiB, 1)} MiB${x.check ? `, ${x.check}` : ''}${x.other ? `; other processes used ${x.other.cpuS.toFixed(1)} CPU-s (${(x.other.share * 100).toFixed(0)} % of the machine)` : ''}`,
  );
}

/** pigz, installed with apt-get when missing and we may; false when it cannot be had. */
async function ensurePigz() {
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

await runBench(main);
