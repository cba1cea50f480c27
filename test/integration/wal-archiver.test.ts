// The continuous WAL archiver against a real PostgreSQL 15 and the real pg_receivewal: segments and
// partials reach the store and leave the spool, the lag falls, pg_receivewal killed or the server
// restarted loses nothing, a store outage only grows the spool, a slot dropped by someone else is a
// gap (counted, reported, streaming goes on), and of two archivers only one streams.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { S3Storage } from '../../src/backup/storage/s3.js';
import type { Storage } from '../../src/backup/storage/storage.js';
import { loadConfig } from '../../src/config/load.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { createLogger } from '../../src/log/logger.js';
import { WalArchiver } from '../../src/pitr/archiver.js';
import { PitrMetrics } from '../../src/pitr/metrics.js';
import { parseWalKey, walPrefix } from '../../src/pitr/store-keys.js';
import { segmentHeader } from '../../src/pitr/wal-header.js';
import { parseWalFileName } from '../../src/pitr/wal-name.js';
import { noDefaults } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startPrivateCluster, withDatabase } from '../support/postgres.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { tempDir } from '../support/temp.js';

let cluster: LocalCluster;
let sysid: string;
let n = 0;

beforeAll(async () => {
  cluster = await startPrivateCluster({
    settings: {
      wal_level: 'replica',
      max_wal_senders: 10,
      max_replication_slots: 10,
      wal_keep_size: 0,
      min_wal_size: "'32MB'",
      max_wal_size: "'64MB'",
    },
  });
  sysid = (await sql(cluster.url(), 'SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!
    .id as string;
});

afterAll(async () => {
  await cluster?.stop();
});

async function sql(url: string, text: string, values?: unknown[]): Promise<Record<string, unknown>[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, values)).rows;
  } finally {
    await c.end();
  }
}

interface Rig {
  url: string;
  archiver: WalArchiver;
  metrics: PitrMetrics;
  registry: Registry;
  storage: Storage;
  spool: string;
  slot: string;
  gaps: string[];
  timelines: number[];
  logs: string[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** A database of its own (so its lease is its own), a slot, a spool and a store. */
async function rig(
  opts: {
    database?: string;
    slot?: string;
    storage?: Storage;
    storeDir?: string;
    spool?: string;
    env?: Record<string, string>;
    /** Another cluster than the file's own. */
    on?: LocalCluster;
  } = {},
): Promise<Rig> {
  n++;
  const on = opts.on ?? cluster;
  const database = opts.database ?? `walarch_${n}_${Math.random().toString(16).slice(2, 6)}`;
  if (!opts.database) await sql(on.url(), `CREATE DATABASE ${database}`);
  const url = withDatabase(on.url(), database);
  const slot = opts.slot ?? `pgmaintd_test_${n}`;
  const spool = opts.spool ?? tempDir('pgmaintd-spool-');
  const storeDir = opts.storeDir ?? tempDir('pgmaintd-walstore-');
  const { config } = loadConfig({
    env: {
      DATABASE_URL: url,
      DB_SSL_MODE: 'disable',
      WAL_ARCHIVE: 'stream',
      WAL_SLOT: slot,
      WAL_SPOOL_DIR: spool,
      WAL_PARTIAL_UPLOAD_INTERVAL: '1s',
      PITR_HEARTBEAT_INTERVAL: '1s',
      LEASE_TTL: '3s',
      BACKUP_DIR: storeDir,
      PG_CLIENT_BIN_DIR: cluster.binaries.binDir,
      ...opts.env,
    },
    defaultsDir: noDefaults(),
  });
  const storage = opts.storage ?? new FsStorage(storeDir);
  const registry = new Registry();
  const metrics = new PitrMetrics(registry);
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const logger = createLogger({ level: 'debug', format: 'json', destination });
  const gaps: string[] = [];
  onTestFailed(() => console.error(`logs of ${slot}:\n${logs.slice(-60).join('')}`));
  const timelines: number[] = [];
  const archiver = new WalArchiver({
    config,
    storage,
    logger,
    metrics,
    onGap: (r) => gaps.push(r),
    onNewTimeline: (t) => timelines.push(t),
  });
  return {
    url,
    archiver,
    metrics,
    registry,
    storage,
    spool,
    slot,
    gaps,
    timelines,
    logs,
    start: () => archiver.start(),
    stop: () => archiver.stop(),
  };
}

async function value(r: Rig, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = r.registry.getSingleMetric(name);
  const { values } = await m!.get();
  const v = values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

/** The finished segments and partials stored, parsed. */
async function stored(storage: Storage, of = sysid) {
  const objects = await storage.list(walPrefix(of));
  const walFiles = objects.flatMap((o) => {
    const w = parseWalKey(of, o.key);
    return w ? [w] : [];
  });
  const segments = walFiles
    .filter((w) => w.file.kind === 'segment' && !w.partial)
    .map((w) => (w.file.kind === 'segment' ? w.file.segNo : 0n))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const partials = walFiles.filter((w) => w.partial);
  return { segments, partials };
}

/** What `r` stored once it holds the finished segment `segNo`. */
function untilStored(r: Rig, segNo: bigint) {
  return waitFor(
    () => stored(r.storage),
    (x) => x.segments.includes(segNo),
    60_000,
    250,
  );
}

/** Segment numbers from `from` on form one unbroken run. */
function unbroken(segments: bigint[], from: bigint): boolean {
  const after = segments.filter((s) => s >= from);
  return after.every((s, i) => s === from + BigInt(i));
}

/** The segment being written now (where the insert position is). */
async function currentSegNo(): Promise<bigint> {
  const r = await sql(cluster.url(), 'SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS name');
  return segNoOfName(r[0]!.name as string);
}

function segNoOfName(name: string): bigint {
  const f = parseWalFileName(name);
  if (f?.kind !== 'segment') throw new Error(`not a segment: ${name}`);
  return f.segNo;
}

/** Writes rows and switches WAL `times` times; the segment number of the last one finished. */
async function writeAndSwitch(url: string, times = 1): Promise<bigint> {
  let last = 0n;
  for (let i = 0; i < times; i++) {
    await sql(url, 'CREATE TABLE IF NOT EXISTS t (id serial, v text)');
    await sql(url, `INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 2000) g`);
    const r = await sql(url, 'SELECT pg_walfile_name(pg_switch_wal()) AS name');
    last = segNoOfName(r[0]!.name as string);
  }
  return last;
}

async function receiverPid(r: Rig): Promise<number> {
  return waitFor(
    async () => r.archiver.receiverPid ?? 0,
    (p) => p > 0,
    60_000,
  );
}

describe('WAL archiver', { timeout: 240_000 }, () => {
  const rigs: Rig[] = [];
  afterAll(async () => {
    await Promise.allSettled(rigs.map((r) => r.stop()));
  });

  it('streams segments and partials to the store, empties the spool, and moves its metrics', async () => {
    const r = await rig();
    rigs.push(r);
    await r.start();
    const pid = await receiverPid(r);
    // the password travels in the environment only
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    expect(cmdline).toContain('pg_receivewal');
    expect(cmdline).not.toContain(cluster.password);
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    expect(environ).toContain('PGAPPNAME=pg-maintd-walreceiver');
    const first = await currentSegNo();
    const last = await writeAndSwitch(r.url, 3);
    const s = await untilStored(r, last);
    expect(unbroken(s.segments, first)).toBe(true);
    // a partial of the segment being written arrives once it holds WAL (the heartbeat writes some)
    await waitFor(
      () => stored(r.storage),
      (x) => x.partials.some((p) => p.file.kind === 'segment' && p.file.segNo > last),
      60_000,
      250,
    );
    expect(await value(r, 'pgmaintd_wal_uploaded_total', { kind: 'segment' })).toBeGreaterThanOrEqual(3);
    expect(await value(r, 'pgmaintd_wal_uploaded_total', { kind: 'partial' })).toBeGreaterThanOrEqual(1);
    expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(1);
    await waitFor(
      () => value(r, 'pgmaintd_wal_spool_files'),
      (v) => v === 0,
      30_000,
    );
    expect(await value(r, 'pgmaintd_wal_spool_free_bytes')).toBeGreaterThan(0);
    expect(await value(r, 'pgmaintd_pitr_heartbeat_last_timestamp_seconds')).toBeGreaterThan(0);
    // caught up: at most the heartbeats written since the last partial upload
    await waitFor(
      () => value(r, 'pgmaintd_wal_archive_lag_bytes'),
      (v) => v < 64 * 1024,
      30_000,
      250,
    );
    await waitFor(
      () => value(r, 'pgmaintd_wal_archive_lag_seconds'),
      (v) => v < 5,
      30_000,
      250,
    );
    const hb = await sql(r.url, 'SELECT at FROM pgmaintd.pitr_heartbeat');
    expect(hb).toHaveLength(1);
    expect(r.logs.join('')).not.toContain(cluster.password);
    expect(r.gaps).toEqual([]);
    await r.stop();
    expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(0);
  });

  it('starts pg_receivewal again after SIGKILL mid-segment and loses nothing', async () => {
    const r = await rig();
    rigs.push(r);
    await r.start();
    const pid = await receiverPid(r);
    const first = await currentSegNo();
    await writeAndSwitch(r.url, 1);
    await sql(r.url, `INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 5000) g`);
    process.kill(pid, 'SIGKILL');
    await waitFor(
      () => value(r, 'pgmaintd_wal_receiver_restarts_total'),
      (v) => v >= 1,
      30_000,
    );
    await waitFor(
      async () => r.archiver.receiverPid ?? 0,
      (p) => p > 0 && p !== pid,
      30_000,
    );
    const last = await writeAndSwitch(r.url, 2);
    const s = await untilStored(r, last);
    expect(unbroken(s.segments, first)).toBe(true);
    expect(r.gaps).toEqual([]);
    await r.stop();
  });

  it('removes a .partial pg_receivewal left half-made (killed while creating it) and streams on', async () => {
    const a = await rig();
    rigs.push(a);
    await a.start();
    await receiverPid(a);
    const first = await currentSegNo();
    await writeAndSwitch(a.url, 1);
    await sql(a.url, `INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 3000) g`);
    await waitFor(
      async () => readdirSync(a.spool).filter((f) => f.endsWith('.partial')),
      (files) => files.length === 1,
      30_000,
    );
    await a.stop();
    // what a kill while pg_receivewal fills a new segment file with zeros leaves behind
    const partial = readdirSync(a.spool).find((f) => f.endsWith('.partial'))!;
    writeFileSync(join(a.spool, partial), Buffer.alloc(1 << 20));
    const database = new URL(a.url).pathname.slice(1);
    const b = await rig({
      database,
      slot: a.slot,
      spool: a.spool,
      storeDir: (a.storage as FsStorage).description,
    });
    rigs.push(b);
    await b.start();
    await receiverPid(b);
    const last = await writeAndSwitch(b.url, 2);
    const s = await untilStored(b, last);
    expect(unbroken(s.segments, first)).toBe(true);
    expect(b.gaps).toEqual([]);
    expect(b.logs.join('')).toContain('half-created');
    await b.stop();
  });

  it('resumes after the server restarts, without a gap', async () => {
    const r = await rig();
    rigs.push(r);
    await r.start();
    await receiverPid(r);
    const first = await currentSegNo();
    await writeAndSwitch(r.url, 1);
    await cluster.stopServer();
    await cluster.startServer();
    const last = await writeAndSwitch(r.url, 2);
    const s = await waitFor(
      () => stored(r.storage),
      (x) => x.segments.includes(last),
      90_000,
      250,
    );
    expect(unbroken(s.segments, first)).toBe(true);
    expect(r.gaps).toEqual([]);
    expect(await value(r, 'pgmaintd_wal_receiver_restarts_total')).toBeGreaterThanOrEqual(1);
    await r.stop();
  });

  it('treats a slot dropped by someone else as a gap: counted, reported, slot made again, streaming goes on', async () => {
    const r = await rig();
    rigs.push(r);
    await r.start();
    await receiverPid(r);
    await writeAndSwitch(r.url, 1);
    // terminate the walsender and drop the slot before pg_receivewal comes back (it waits 1 s)
    await waitFor(
      async () => {
        await sql(
          cluster.url(),
          `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`,
          [r.slot],
        );
        try {
          await sql(cluster.url(), 'SELECT pg_drop_replication_slot($1)', [r.slot]);
          return true;
        } catch {
          return false;
        }
      },
      (ok) => ok,
      30_000,
      20,
    );
    // WAL moves on and is removed meanwhile
    for (let i = 0; i < 4; i++) {
      await writeAndSwitch(r.url, 1);
      await sql(cluster.url(), 'CHECKPOINT');
    }
    await waitFor(
      async () => r.gaps.length,
      (v) => v >= 1,
      60_000,
    );
    expect(await value(r, 'pgmaintd_wal_gaps_total')).toBeGreaterThanOrEqual(1);
    const slots = await waitFor(
      () => sql(cluster.url(), 'SELECT active FROM pg_replication_slots WHERE slot_name = $1', [r.slot]),
      (rows) => rows.length === 1 && rows[0]!.active === true,
      60_000,
    );
    expect(slots).toHaveLength(1);
    const gapsSoFar = r.gaps.length;
    const from = await currentSegNo();
    const last = await writeAndSwitch(r.url, 2);
    const s = await untilStored(r, last);
    expect(unbroken(s.segments, from)).toBe(true);
    expect(r.gaps.length).toBe(gapsSoFar);
    expect(r.logs.join('')).toContain('WAL archive gap');
    await r.stop();
  });

  for (const spoolKept of [true, false])
    it(`reports a gap found at start (${spoolKept ? 'pg_receivewal asks for removed WAL' : 'the first segment does not follow the stored ones'})`, async () => {
      const a = await rig();
      rigs.push(a);
      await a.start();
      await receiverPid(a);
      const last = await writeAndSwitch(a.url, 1);
      await untilStored(a, last);
      await a.stop();
      // while no pg-maintd runs, the slot goes and the server removes the WAL after it (the other
      // tests' slots, left behind as pg-maintd leaves its own, would keep that WAL too). The server
      // ends a stopped pg_receivewal's walsender in its own time: a slot still active then is not
      // dropped and keeps the WAL, so wait until none is
      await waitFor(
        () => sql(cluster.url(), 'SELECT slot_name FROM pg_replication_slots WHERE active'),
        (rows) => rows.length === 0,
        60_000,
      );
      await sql(cluster.url(), 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots');
      // the segment after the last one stored (where the kept spool resumes) must be gone from the server
      const oldestOnServer = async () => {
        await writeAndSwitch(a.url, 1);
        await sql(cluster.url(), 'CHECKPOINT');
        const r = await sql(
          cluster.url(),
          "SELECT min(name) AS name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
        );
        return segNoOfName(r[0]!.name as string);
      };
      await waitFor(oldestOnServer, (oldest) => oldest > last + 1n, 60_000);
      const database = new URL(a.url).pathname.slice(1);
      const storeDir = (a.storage as FsStorage).description;
      const b = await rig({
        database,
        slot: a.slot,
        storeDir,
        ...(spoolKept ? { spool: a.spool } : {}),
      });
      rigs.push(b);
      await b.start();
      await receiverPid(b);
      const from = await currentSegNo();
      const next = await writeAndSwitch(b.url, 2);
      await waitFor(
        async () => b.gaps.length,
        (v) => v >= 1,
        60_000,
      );
      expect(await value(b, 'pgmaintd_wal_gaps_total')).toBe(b.gaps.length);
      const s = await untilStored(b, next);
      expect(unbroken(s.segments, from)).toBe(true);
      expect(b.gaps).toHaveLength(1);
      expect(b.gaps[0]).toMatch(spoolKept ? /removed WAL/ : /does not follow/);
      await b.stop();
    });

  it('starts pg_receivewal again at the target DATABASE_URL_FILE names now', async () => {
    const first = await rig();
    await first.stop();
    const database = new URL(first.url).pathname.slice(1);
    const file = join(tempDir('pgmaintd-urlfile-'), 'url');
    const at = (host: string) => {
      const u = new URL(first.url);
      u.hostname = host;
      return u.toString();
    };
    writeFileSync(file, at('127.0.0.1'), { mode: 0o600 });
    const r = await rig({ database, env: { DATABASE_URL_FILE: file, DATABASE_URL: '' } });
    rigs.push(r);
    await r.start();
    const pid = await receiverPid(r);
    const hostOf = (p: number) =>
      readFileSync(`/proc/${p}/environ`, 'utf8')
        .split('\0')
        .find((kv) => kv.startsWith('PGHOST='));
    expect(hostOf(pid)).toBe('PGHOST=127.0.0.1');
    // a failover tool rewrites the file (here: the same server under another name)
    writeFileSync(file, at('localhost'), { mode: 0o600 });
    // the pools read the file at most once a second: let a second pass so the next start reads it
    await new Promise((res) => setTimeout(res, 1100));
    process.kill(pid, 'SIGKILL');
    const next = await waitFor(
      async () => r.archiver.receiverPid ?? 0,
      (p) => p > 0 && p !== pid,
      60_000,
    );
    expect(hostOf(next)).toBe('PGHOST=localhost');
    const last = await writeAndSwitch(r.url, 1);
    await untilStored(r, last);
    expect(r.gaps).toEqual([]);
    await r.stop();
  });

  describe('another cluster', () => {
    let other: LocalCluster;
    let otherSysid: string;
    beforeAll(async () => {
      other = await startPrivateCluster({
        settings: { wal_level: 'replica', max_wal_senders: 10, max_replication_slots: 10 },
      });
      otherSysid = (
        await sql(other.url(), 'SELECT system_identifier::text AS id FROM pg_control_system()')
      )[0]!.id as string;
      expect(otherSysid).not.toBe(sysid);
    }, 120_000);
    afterAll(async () => {
      await other?.stop();
    });

    it("moves another cluster's WAL left in the spool aside, stores none of it, and streams its own", async () => {
      // the spool another cluster's archiver left: its .partial, and a finished segment of its own
      // (copied from its pg_wal), and a timeline history file (written here: no promotion needed)
      const b = await rig({ on: other });
      await b.start();
      await receiverPid(b);
      await sql(b.url, 'CREATE TABLE t (v text)');
      await sql(b.url, `INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 3000) g`);
      await waitFor(
        async () => readdirSync(b.spool).filter((f) => f.endsWith('.partial')),
        (files) => files.length === 1,
        30_000,
      );
      await b.stop();
      const walDir = join(other.dataDir, 'pg_wal');
      const finished = readdirSync(walDir)
        .filter((f) => /^[0-9A-F]{24}$/.test(f))
        .sort()[0]!;
      copyFileSync(join(walDir, finished), join(b.spool, finished));
      writeFileSync(join(b.spool, '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
      // pg_receivewal starts from a compressed segment too (pg-maintd never has it compress)
      writeFileSync(join(b.spool, '000000010000000000000040.gz'), gzipSync(Buffer.alloc(1 << 20)));
      // a link named like nothing pg-maintd makes: files set aside stay in the spool, renamed
      symlinkSync(tempDir('pgmaintd-elsewhere-'), join(b.spool, 'rejected'));
      const foreign = readdirSync(b.spool)
        .filter((f) => f !== 'rejected')
        .sort();
      expect(foreign).toHaveLength(4);

      const a = await rig({ spool: b.spool });
      rigs.push(a);
      await a.start();
      await receiverPid(a);
      const last = await writeAndSwitch(a.url, 2);
      await untilStored(a, last);
      const aside = readdirSync(a.spool).filter((f) => f.includes('.rejected-'));
      expect(aside.map((f) => f.split('.rejected-')[0]).sort()).toEqual(foreign);
      expect(readdirSync(join(a.spool, 'rejected'))).toEqual([]);
      expect(await value(a, 'pgmaintd_wal_spool_rejected_files_total')).toBe(3);
      expect(a.logs.join('')).toContain(
        `it belongs to the cluster with system identifier ${otherSysid}, not to this one (${sysid})`,
      );
      // every WAL object stored is this cluster's, by its own header; no history file was stored
      const objects = await a.storage.list(walPrefix(sysid));
      expect(objects.some((o) => parseWalKey(sysid, o.key)?.file.kind === 'history')).toBe(false);
      for (const o of objects) {
        if (!parseWalKey(sysid, o.key)) continue;
        const head = gunzipSync(readFileSync(join((a.storage as FsStorage).description, o.key))).subarray(
          0,
          40,
        );
        expect(segmentHeader(head)?.sysid, o.key).toBe(sysid);
      }
      expect(await a.storage.list(walPrefix(otherSysid))).toEqual([]);
      expect(a.gaps).toEqual([]);
      await a.stop();
    });

    it('stops streaming when DATABASE_URL_FILE comes to name another cluster, and streams again once it names its own', async () => {
      const first = await rig();
      await first.stop();
      const database = new URL(first.url).pathname.slice(1);
      const file = join(tempDir('pgmaintd-urlfile-'), 'url');
      writeFileSync(file, first.url, { mode: 0o600 });
      const r = await rig({ database, env: { DATABASE_URL_FILE: file, DATABASE_URL: '' } });
      rigs.push(r);
      await r.start();
      await receiverPid(r);
      writeFileSync(file, other.url(), { mode: 0o600 });
      // pg_receivewal restarted (killed here) after the pools read the file again goes nowhere
      await waitFor(
        async () => {
          const pid = r.archiver.receiverPid;
          if (pid) process.kill(pid, 'SIGKILL');
          return r.logs.join('');
        },
        (logs) => logs.includes('DATABASE_URL now names another cluster'),
        60_000,
        500,
      );
      expect(r.logs.join('')).toContain(`system identifier ${otherSysid}, archiving ${sysid}`);
      await waitFor(
        () => value(r, 'pgmaintd_wal_archiver_up'),
        (v) => v === 0,
        30_000,
      );
      expect(r.archiver.receiverPid).toBeUndefined();
      expect(await r.storage.list(walPrefix(otherSysid))).toEqual([]);
      writeFileSync(file, first.url, { mode: 0o600 });
      await receiverPid(r);
      const last = await writeAndSwitch(r.url, 1);
      await untilStored(r, last);
      await r.stop();
    });
  });

  it('waits on a standby (said once), and streams the new timeline once it is promoted', async () => {
    const first = await rig();
    await first.stop();
    const database = new URL(first.url).pathname.slice(1);
    const standby = await startPrivateCluster({
      replicaOf: cluster,
      settings: { wal_level: 'replica', max_wal_senders: 10, max_replication_slots: 10 },
    });
    try {
      const file = join(tempDir('pgmaintd-urlfile-'), 'url');
      writeFileSync(file, standby.url(database), { mode: 0o600 });
      // with recipients: the new timeline's history file is stored encrypted too
      const id = join(tempDir('pgmaintd-walenc-keys-'), 'key.txt');
      execFileSync('age-keygen', ['-o', id], { stdio: 'ignore' });
      const pub = execFileSync('age-keygen', ['-y', id], { encoding: 'utf8' }).trim();
      const r = await rig({
        database,
        env: { DATABASE_URL_FILE: file, DATABASE_URL: '', BACKUP_ENCRYPTION_RECIPIENTS: pub },
      });
      rigs.push(r);
      await r.start();
      await waitFor(
        async () => r.logs.filter((l) => l.includes('is a standby')).length,
        (v) => v >= 1,
        30_000,
      );
      expect(r.archiver.receiverPid).toBeUndefined();
      expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(0);
      await sql(standby.url(), 'SELECT pg_promote()');
      await receiverPid(r);
      await waitFor(
        async () => r.timelines,
        (t) => t.includes(2),
        60_000,
      );
      const objects = await r.storage.list(walPrefix(sysid));
      const history = objects
        .map((o) => parseWalKey(sysid, o.key))
        .find((w) => w?.file.name === '00000002.history');
      expect(history?.key).toMatch(/\.gz\.age$/);
      // what PostgreSQL wrote, decrypted by the age CLI, is the switch the name carries
      const text = execFileSync(
        'sh',
        ['-c', `age -d -i ${id} ${join((r.storage as FsStorage).description, history!.key)} | gunzip`],
        {
          encoding: 'utf8',
        },
      );
      const [parent, lsn] = text.trim().split('\n').at(-1)!.split('\t');
      const [hi, lo] = lsn!.split('/');
      expect(history?.lineage).toEqual({
        parent: Number(parent),
        switchLsn: (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`),
      });
      expect(r.logs.filter((l) => l.includes('is a standby'))).toHaveLength(1);
      await r.stop();
    } finally {
      await standby.stop();
    }
  });

  it('lets only one of two archivers stream; the other takes over when the leader stops', async () => {
    const a = await rig();
    const database = new URL(a.url).pathname.slice(1);
    const storeDir = tempDir('pgmaintd-walstore-shared-');
    const b = await rig({ database, slot: a.slot, storeDir });
    rigs.push(a, b);
    await a.start();
    await receiverPid(a);
    const first = await currentSegNo();
    await writeAndSwitch(a.url, 1);
    await b.start();
    const active = () =>
      sql(
        cluster.url(),
        `SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name = 'pg-maintd-walreceiver'`,
      );
    // b tried for the lease, stood aside, and never streams while a leads
    await waitFor(
      async () => b.logs.join(''),
      (text) => text.includes('another pg-maintd leads'),
      30_000,
    );
    expect(b.archiver.leading).toBe(false);
    expect(b.archiver.receiverPid).toBeUndefined();
    expect((await active())[0]!.n).toBeLessThanOrEqual(1);
    const stoppedAt = Date.now();
    await a.stop();
    await receiverPid(b);
    expect(Date.now() - stoppedAt).toBeLessThan(30_000);
    expect(b.archiver.leading).toBe(true);
    // what a streamed and what b streams after it make one chain
    const last = await writeAndSwitch(a.url, 2);
    const s = await untilStored(b, last);
    expect(unbroken(s.segments, first)).toBe(true);
    expect(a.gaps).toEqual([]);
    expect(b.gaps).toEqual([]);
    await b.stop();
  });

  it('stops streaming when its lease is lost, and streams again once it can take it back', async () => {
    const r = await rig();
    rigs.push(r);
    await r.start();
    const pid = await receiverPid(r);
    // another holder takes the row (as a hand edit or a clock jump would)
    await sql(
      r.url,
      `UPDATE pgmaintd.leases SET token = 'stolen', holder = 'elsewhere pid 1',
              expires_at = clock_timestamp() + interval '1 hour' WHERE name = 'wal-archive'`,
    );
    await waitFor(
      async () => r.archiver.receiverPid ?? 0,
      (p) => p === 0,
      30_000,
    );
    expect(r.archiver.leading).toBe(false);
    expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(0);
    const gone = await waitFor(
      () => sql(cluster.url(), `SELECT count(*)::int AS n FROM pg_stat_replication WHERE pid = ${pid}`),
      (rows) => rows[0]!.n === 0,
      30_000,
    );
    expect(gone[0]!.n).toBe(0);
    await sql(r.url, `UPDATE pgmaintd.leases SET expires_at = clock_timestamp() WHERE name = 'wal-archive'`);
    await waitFor(
      async () => r.archiver.receiverPid ?? 0,
      (p) => p > 0,
      30_000,
    );
    expect(r.archiver.leading).toBe(true);
    await r.stop();
  });

  it('with encryption recipients (and no identity) stores segments and partials encrypted, readable with age', async () => {
    const keys = tempDir('pgmaintd-walkeys-');
    const id = join(keys, 'key.txt');
    execFileSync('age-keygen', ['-o', id], { stdio: 'ignore' });
    const pub = execFileSync('age-keygen', ['-y', id], { encoding: 'utf8' }).trim();
    const storeDir = tempDir('pgmaintd-walstore-');
    const r = await rig({ storeDir, env: { BACKUP_ENCRYPTION_RECIPIENTS: pub } });
    rigs.push(r);
    await r.start();
    const last = await writeAndSwitch(r.url, 2);
    await waitFor(
      () => stored(r.storage),
      (x) =>
        x.segments.includes(last) && x.partials.some((p) => p.file.kind === 'segment' && p.file.segNo > last),
      60_000,
      250,
    );
    const objects = await r.storage.list(walPrefix(sysid));
    const wal = objects.flatMap((o) => {
      const w = parseWalKey(sysid, o.key);
      return w && w.file.kind === 'segment' ? [w] : [];
    });
    expect(wal.length).toBeGreaterThan(1);
    expect(wal.filter((w) => !w.storedTag || !w.key.endsWith('.gz.age'))).toEqual([]);
    const seg = wal.find((w) => !w.partial && w.file.kind === 'segment' && w.file.segNo === last)!;
    const plain = execFileSync('sh', ['-c', `age -d -i ${id} ${join(storeDir, seg.key)} | gunzip`], {
      maxBuffer: 64 << 20,
    });
    expect(createHash('sha256').update(plain).digest('hex')).toBe(seg.tag);
  }, 120_000);

  it('in command mode writes only the heartbeat (the server archives through wal-push)', async () => {
    const r = await rig({ env: { WAL_ARCHIVE: 'command' } });
    rigs.push(r);
    await r.start();
    const rows = await waitFor(
      () =>
        sql(r.url, `SELECT extract(epoch FROM at)::float8 AS at FROM pgmaintd.pitr_heartbeat`).catch(
          () => [],
        ),
      (x) => x.length === 1,
      30_000,
    );
    await waitFor(
      () => value(r, 'pgmaintd_pitr_heartbeat_last_timestamp_seconds'),
      (v) => v >= (rows[0]!.at as number),
      30_000,
    );
    expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(1);
    expect(r.archiver.receiverPid).toBeUndefined();
    const slots = await sql(cluster.url(), 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
      r.slot,
    ]);
    expect(slots).toHaveLength(0);
    await r.stop();
  });
});

describe('WAL archiver with the store down', { timeout: 300_000 }, () => {
  let s3: TestS3;
  let proxy: FaultProxy;
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  beforeAll(async () => {
    s3 = await startTestS3();
    proxy = await startFaultProxy({ target: s3.endpoint });
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  });
  afterAll(async () => {
    process.env.AWS_ACCESS_KEY_ID = saved.id;
    process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    await proxy?.close();
    await s3?.stop();
  });

  it('streams into the spool when the store is down from the start, and uploads once it is back', async () => {
    const bucket = await s3.createBucket('pgmaintd-wal');
    const storage = new S3Storage({
      bucket,
      prefix: '',
      region: s3.region,
      endpoint: proxy.url,
      forcePathStyle: true,
      maxAttempts: 1,
    });
    const r = await rig({ storage });
    try {
      await proxy.down();
      await r.start();
      await receiverPid(r);
      const first = await currentSegNo();
      const last = await writeAndSwitch(r.url, 2);
      await waitFor(
        () => value(r, 'pgmaintd_wal_spool_files'),
        (v) => v >= 2,
        60_000,
        250,
      );
      expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(1);
      await proxy.up();
      const s = await waitFor(
        () => stored(r.storage),
        (x) => x.segments.includes(last),
        120_000,
        500,
      );
      expect(unbroken(s.segments, first)).toBe(true);
      expect(r.gaps).toEqual([]);
    } finally {
      await proxy.up().catch(() => undefined);
      await r.stop();
      storage.close();
    }
  });

  it('keeps WAL in the spool while the store refuses, counts the failures, and drains it after', async () => {
    const bucket = await s3.createBucket('pgmaintd-wal');
    const storage = new S3Storage({
      bucket,
      prefix: '',
      region: s3.region,
      endpoint: proxy.url,
      forcePathStyle: true,
      maxAttempts: 1,
    });
    const r = await rig({ storage });
    try {
      await r.start();
      await receiverPid(r);
      const first = await currentSegNo();
      await writeAndSwitch(r.url, 1);
      await untilStored(r, first);
      await proxy.down();
      const last = await writeAndSwitch(r.url, 3);
      await waitFor(
        () => value(r, 'pgmaintd_wal_spool_files'),
        (v) => v >= 3,
        60_000,
        250,
      );
      await waitFor(
        () => value(r, 'pgmaintd_wal_upload_failures_total'),
        (v) => v >= 2,
        60_000,
        250,
      );
      expect(await value(r, 'pgmaintd_wal_archiver_up')).toBe(1);
      await proxy.up();
      const s = await waitFor(
        () => stored(r.storage),
        (x) => x.segments.includes(last),
        120_000,
        500,
      );
      expect(unbroken(s.segments, first)).toBe(true);
      await waitFor(
        () => value(r, 'pgmaintd_wal_spool_files'),
        (v) => v === 0,
        60_000,
        250,
      );
      expect(r.gaps).toEqual([]);
    } catch (err) {
      console.error(r.logs.slice(-40).join(''));
      throw err;
    } finally {
      await r.stop();
      storage.close();
    }
  }, 300_000);
});

describe('doctor with WAL_ARCHIVE on', () => {
  async function findings(url: string, env: Record<string, string>) {
    const { config } = loadConfig({
      env: { DATABASE_URL: url, DB_SSL_MODE: 'disable', PG_CLIENT_BIN_DIR: cluster.binaries.binDir, ...env },
      defaultsDir: noDefaults(),
    });
    const report = await runDoctor({ config, logger: createLogger({ level: 'silent', format: 'json' }) });
    return new Map(report.findings.filter((f) => f.id.startsWith('wal.')).map((f) => [f.id, f]));
  }

  it('checks what streaming needs: wal_level, senders, the slot bound, REPLICATION, pg_hba, the slot', async () => {
    const f = await findings(cluster.url(), { WAL_ARCHIVE: 'stream', WAL_SLOT: 'pgmaintd_doctor' });
    expect(f.get('wal.wal_level')?.status).toBe('ok');
    expect(f.get('wal.max_wal_senders')?.status).toBe('ok');
    expect(f.get('wal.max_slot_wal_keep_size')?.status).toBe('warn');
    expect(f.get('wal.replication_role')?.status).toBe('ok');
    expect(f.get('wal.replication_connection')?.status).toBe('ok');
    expect(f.get('wal.slot')?.status).toBe('info');
    expect(f.has('wal.archive_command')).toBe(false);
  });

  it('fails a role without REPLICATION, and its replication connection', async () => {
    const role = `walnorep_${Math.random().toString(16).slice(2, 8)}`;
    await sql(cluster.url(), `CREATE ROLE ${role} LOGIN PASSWORD 'norep-pw-1'`);
    const u = new URL(cluster.url());
    u.username = role;
    u.password = 'norep-pw-1';
    const f = await findings(u.toString(), { WAL_ARCHIVE: 'stream' });
    expect(f.get('wal.replication_role')?.status).toBe('fail');
    expect(f.get('wal.replication_role')?.fix?.sql?.[0]).toContain('REPLICATION');
    const conn = f.get('wal.replication_connection')!;
    expect(conn.status).toBe('fail');
    expect(conn.found).not.toContain('norep-pw-1');
  });

  it('in command mode checks archive_command instead', async () => {
    const f = await findings(cluster.url(), { WAL_ARCHIVE: 'command' });
    expect(f.get('wal.archive_command')?.status).toBe('fail');
    expect(f.get('wal.archive_command')?.fix?.sql?.join(' ')).toContain('pg-maintd wal-push %p');
    expect(f.has('wal.replication_role')).toBe(false);
  });
});
