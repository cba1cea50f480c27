// Point-in-time recovery end to end, as it runs in production: the built daemon with
// WAL_ARCHIVE=stream under a non-superuser role with REPLICATION (owner of the application's
// database, in pg_monitor), its password in PGPASSWORD only. It takes the first base backup by
// itself, streams WAL to the store, and a restore gets back what a writer committed: all of it up
// to about one partial-upload interval before the primary died (--latest), and exactly the rows up
// to a target time on the timeline a promotion began (the archiver following DATABASE_URL_FILE).
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { sample, scrapeMetrics, spawnCli, startDaemon, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { ProcSampler, type ProcSeen } from '../support/secret-scan.js';
import { caughtUp, startStandbyPair, type StandbyPair } from '../support/standby.js';
import { tempDir, tempPath } from '../support/temp.js';

const pgUser = (() => {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
})();

const suffix = randomBytes(3).toString('hex');
const ROLE = `pitrrole_${suffix}`;
const DATABASE = `pitrapp_${suffix}`;
// '+', '/' and '=' make the URL-encoded form differ from the raw one
const PASSWORD = `pw-${randomBytes(8).toString('hex')}+/=`;
const PARTIAL_INTERVAL_MS = 2000;

const clusters: LocalCluster[] = [];
let pair: StandbyPair | undefined;

afterAll(async () => {
  await Promise.allSettled([...clusters.map((c) => c.stop()), pair?.stop()]);
});

async function sql<R extends pg.QueryResultRow>(url: string, text: string): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<R>(text)).rows;
  } finally {
    await c.end();
  }
}

/** The role pg-maintd runs as: least privilege plus REPLICATION, the owner of the app's database. */
async function createRole(c: LocalCluster): Promise<void> {
  await sql(c.url(), `CREATE ROLE ${ROLE} LOGIN REPLICATION PASSWORD '${PASSWORD}' IN ROLE pg_monitor`);
  await sql(c.url(), `CREATE DATABASE ${DATABASE} OWNER ${ROLE}`);
  await sql(
    roleUrl(c, true),
    'CREATE TABLE ticks(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())',
  );
}

function roleUrl(c: LocalCluster, withPassword = false): string {
  const u = new URL(c.url(DATABASE));
  u.username = ROLE;
  u.password = withPassword ? encodeURIComponent(PASSWORD) : '';
  return u.toString();
}

function daemonEnv(store: string, slot: string, binDir: string): Record<string, string> {
  return {
    PGPASSWORD: PASSWORD,
    DB_SSL_MODE: 'disable',
    BACKUP_DIR: store,
    BACKUP_SCHEDULE: 'off',
    BACKUP_VERIFY_SCHEDULE: 'off',
    MAINTENANCE_SCHEDULE: 'off',
    BASEBACKUP_SCHEDULE: 'off',
    PITR_DRILL_SCHEDULE: 'off',
    WAL_ARCHIVE: 'stream',
    WAL_SLOT: slot,
    WAL_SPOOL_DIR: tempDir('pitr-e2e-spool-'),
    WAL_PARTIAL_UPLOAD_INTERVAL: `${PARTIAL_INTERVAL_MS / 1000}s`,
    PITR_HEARTBEAT_INTERVAL: '1s',
    LEASE_TTL: '3s',
    PG_CLIENT_BIN_DIR: binDir,
    MIGRATE_ON_START: 'false',
    LOG_LEVEL: 'info',
  };
}

interface Tick {
  id: number;
  at: Date;
  /** When the INSERT's commit was acknowledged, by this process's clock. */
  ackedAt: number;
}

/**
 * Inserts a timestamped row every 100 ms as the role, logging each acknowledged commit. `mark()`
 * reads the server's clock between two inserts: a time no commit straddles, so a restore to it has
 * exactly the rows before it.
 */
function startWriter(url: string, log: Tick[]) {
  let writing = true;
  let marks: Array<(t: Date) => void> = [];
  const done = (async () => {
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => undefined);
    await c.connect();
    try {
      while (writing) {
        const r = await c.query<{ id: string; at: Date }>(
          'INSERT INTO ticks DEFAULT VALUES RETURNING id, at',
        );
        log.push({ id: Number(r.rows[0]!.id), at: r.rows[0]!.at, ackedAt: Date.now() });
        if (marks.length > 0) {
          const t = (await c.query<{ t: Date }>('SELECT clock_timestamp() AS t')).rows[0]!.t;
          for (const m of marks) m(t);
          marks = [];
        }
        await new Promise((res) => setTimeout(res, 100));
      }
    } catch (err) {
      // the server stopped under it (test 1): the log holds what was acknowledged
      if (writing) throw err;
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  return {
    mark: () => new Promise<Date>((res) => marks.push(res)),
    /** Stops asking; what is in flight may finish or fail (the server is going away). */
    halt() {
      writing = false;
    },
    async stop() {
      writing = false;
      await done;
    },
    done,
  };
}

/** Waits `ms` by polling the clock (no fixed sleep: the condition is the elapsed time itself). */
async function elapse(ms: number): Promise<void> {
  const t0 = Date.now();
  await waitFor(
    async () => Date.now() - t0,
    (d) => d >= ms,
    ms + 30_000,
    50,
  );
}

interface StoredBase {
  trigger: string;
  timeline: number;
}

function storedBases(store: string, sysid: string): StoredBase[] {
  const dir = join(store, 'pitr', sysid, 'base');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => n.endsWith('.manifest.json'))
    .map((n) => JSON.parse(readFileSync(join(dir, n), 'utf8')) as StoredBase);
}

function storedWal(store: string, sysid: string): string[] {
  const dir = join(store, 'pitr', sysid, 'wal');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** The newest stored partial: the largest segment, then the most bytes (names sort so). */
function newestPartial(store: string, sysid: string): string | undefined {
  return storedWal(store, sysid)
    .filter((n) => n.includes('.partial.'))
    .at(-1);
}

function portOf(out: string): number {
  const m = /port=(\d+)/.exec(out);
  if (!m) throw new Error(`no port in the restore's output:\n${out}`);
  return Number(m[1]);
}

/** What a failed restore needs explained: the daemon's and the restore's words, the store, the server's log. */
function diagnose(
  d: { output(): string },
  restoreOutput: string,
  dir: string,
  store: string,
  sysid: string,
): void {
  const serverLog = join(dir, 'log', 'pgmaintd-restore.log');
  console.log(
    [
      '--- daemon',
      d.output(),
      '--- restore',
      restoreOutput,
      '--- stored WAL',
      storedWal(store, sysid).join('\n'),
      '--- stored bases',
      JSON.stringify(storedBases(store, sysid)),
      '--- restored server log',
      existsSync(serverLog) ? readFileSync(serverLog, 'utf8') : '(none)',
    ].join('\n'),
  );
}

function stopRestored(binDir: string, dir: string) {
  if (!existsSync(join(dir, 'postmaster.pid'))) return;
  spawnSync(join(binDir, 'pg_ctl'), ['-D', dir, '-m', 'immediate', '-w', 'stop'], {
    ...pgUser,
    cwd: '/',
    stdio: 'ignore',
  });
}

/** Watches every pg_receivewal and pg_basebackup this machine runs: none may carry the password. */
function watchChildren(): { seen: ProcSeen[]; sampler: ProcSampler } {
  const seen: ProcSeen[] = [];
  const sampler = new ProcSampler(50, (p) => {
    if (p.cmdline.includes('pg_receivewal') || p.cmdline.includes('pg_basebackup')) seen.push(p);
  });
  sampler.start();
  return { seen, sampler };
}

function expectNoSecret(text: string, what: string): void {
  expect(text, what).not.toContain(PASSWORD);
  expect(text, what).not.toContain(encodeURIComponent(PASSWORD));
}

/** Waits until the daemon's first base backup (trigger "first") is in the store and counted. */
async function firstBaseBackup(d: Awaited<ReturnType<typeof startDaemon>>, store: string, sysid: string) {
  await waitFor(
    async () => storedBases(store, sysid),
    (b) => b.some((x) => x.trigger === 'first'),
    240_000,
    500,
  );
  await waitFor(
    async () =>
      sample(await scrapeMetrics(d), 'pgmaintd_basebackup_runs_total', {
        result: 'success',
        trigger: 'first',
      }) ?? 0,
    (n) => n >= 1,
    30_000,
    250,
  );
}

describe('PITR with the daemon streaming WAL', { timeout: 600_000 }, () => {
  it('--latest after the primary dies: every row committed until a partial interval before it', async () => {
    const t0 = Date.now();
    const cluster = await startPrivateCluster({
      settings: {
        wal_level: 'replica',
        max_wal_senders: 5,
        max_replication_slots: 5,
        wal_keep_size: 0,
        // the harness turns it off for speed: an acknowledged commit must be in the WAL sent
        synchronous_commit: 'on',
      },
    });
    clusters.push(cluster);
    await createRole(cluster);
    const sysid = (
      await sql<{ id: string }>(
        cluster.url(),
        'SELECT system_identifier::text AS id FROM pg_control_system()',
      )
    )[0]!.id;
    const store = tempDir('pitr-e2e-store-');
    const { seen, sampler } = watchChildren();
    const d = await startDaemon({
      ...daemonEnv(store, `pgmaintd_${suffix}`, cluster.binaries.binDir),
      DATABASE_URL: roleUrl(cluster),
    });
    const log: Tick[] = [];
    let stoppedAt = 0;
    try {
      await firstBaseBackup(d, store, sysid);
      const writer = startWriter(roleUrl(cluster, true), log);
      await waitFor(
        async () => sample(await scrapeMetrics(d), 'pgmaintd_wal_archive_lag_seconds') ?? Infinity,
        (lag) => lag <= 3,
        120_000,
        250,
      );
      await elapse(10_000);
      stoppedAt = Date.now();
      writer.halt();
      cluster.stopServerSync(); // -m immediate: no shutdown checkpoint, no final WAL sent
      await writer.done;
      // the daemon keeps running: its last partial reaches the store, then nothing changes any more
      let last = newestPartial(store, sysid);
      let changedAt = Date.now();
      await waitFor(
        async () => {
          const now = newestPartial(store, sysid);
          if (now !== last) {
            last = now;
            changedAt = Date.now();
          }
          return Date.now() - changedAt;
        },
        (still) => still > 2 * PARTIAL_INTERVAL_MS + 1000,
        120_000,
        250,
      );
    } finally {
      sampler.stop();
      d.child.kill('SIGTERM');
      await d.exited;
    }
    expectNoSecret(d.output(), 'the daemon output');
    for (const p of seen) expectNoSecret(p.cmdline, `the command line of ${p.comm}`);
    expect(seen.some((p) => p.cmdline.includes('pg_receivewal'))).toBe(true);
    expect(seen.some((p) => p.cmdline.includes('pg_basebackup'))).toBe(true);
    expect(log.length).toBeGreaterThan(50);

    const dir = tempPath('pitr-e2e-latest-');
    const restore = spawnCli(
      ['pitr', 'restore', '--data-dir', dir, '--latest', '--start', '--system-identifier', sysid],
      { DATABASE_URL: roleUrl(cluster), PGPASSWORD: PASSWORD, DB_SSL_MODE: 'disable', BACKUP_DIR: store },
    );
    const { code } = await restore.exited;
    try {
      expect(code, restore.output()).toBe(0);
      expect(restore.output()).toContain('recovery is complete');
      expectNoSecret(restore.output(), 'the restore output');
      const port = portOf(restore.output());
      const ids = new Set(
        (
          await sql<{ id: string }>(
            cluster.url(DATABASE).replace(/:\d+\//, `:${port}/`),
            'SELECT id FROM ticks',
          )
        ).map((r) => Number(r.id)),
      );
      const mustHave = log.filter((t) => t.ackedAt <= stoppedAt - PARTIAL_INTERVAL_MS - 1000);
      const missing = mustHave.filter((t) => !ids.has(t.id)).map((t) => t.id);
      expect(missing, `rows acknowledged before ${PARTIAL_INTERVAL_MS + 1000} ms ahead of the stop`).toEqual(
        [],
      );
      // nothing that was never written (the one in flight at the stop may or may not be there)
      const written = new Set(log.map((t) => t.id));
      expect([...ids].filter((id) => !written.has(id)).length).toBeLessThanOrEqual(1);
      const newestAcked = log.filter((t) => ids.has(t.id)).at(-1)!;
      console.log(
        `pitr-daemon --latest: ${ids.size} of ${log.length} acknowledged rows restored; the newest acknowledged ${stoppedAt - newestAcked.ackedAt} ms before the stop; test ${Math.round((Date.now() - t0) / 1000)} s`,
      );
    } finally {
      stopRestored(cluster.binaries.binDir, dir);
    }
  });

  it('follows a promotion: timeline 2 archived, a new base backup, a restore to a time after it', async () => {
    const t0 = Date.now();
    pair = await startStandbyPair([]);
    const { primary, standby } = pair;
    await createRole(primary);
    await caughtUp(pair);
    const sysid = (
      await sql<{ id: string }>(
        primary.url(),
        'SELECT system_identifier::text AS id FROM pg_control_system()',
      )
    )[0]!.id;
    const store = tempDir('pitr-e2e-store2-');
    const urlDir = tempDir('pitr-e2e-url-');
    const urlFile = join(urlDir, 'database-url');
    const writeUrlFile = (content: string) => {
      // as a Secret update: a new file renamed over the old one
      writeFileSync(`${urlFile}.new`, `${content}\n`, { mode: 0o600 });
      renameSync(`${urlFile}.new`, urlFile);
    };
    writeUrlFile(roleUrl(primary));
    const { seen, sampler } = watchChildren();
    const d = await startDaemon({
      ...daemonEnv(store, `pgmaintd2_${suffix}`, primary.binaries.binDir),
      DATABASE_URL_FILE: urlFile,
    });
    const before: Tick[] = [];
    const after: Tick[] = [];
    let target: Date;
    try {
      await firstBaseBackup(d, store, sysid);
      expect(storedBases(store, sysid).every((b) => b.timeline === 1)).toBe(true);
      const w1 = startWriter(roleUrl(primary, true), before);
      await elapse(3000);
      await w1.stop();
      await caughtUp(pair);
      // the archiver keeps up before the switch (the heartbeat writes on: the lag is never zero)
      await waitFor(
        async () => sample(await scrapeMetrics(d), 'pgmaintd_wal_archive_lag_seconds') ?? Infinity,
        (lag) => lag <= 3,
        120_000,
        250,
      );

      const promoted = await sql<{ ok: boolean }>(standby.url(), 'SELECT pg_promote(true, 60) AS ok');
      expect(promoted[0]!.ok).toBe(true);
      // the premise: the new primary holds every row the old one acknowledged
      const onNew = new Set(
        (await sql<{ id: string }>(roleUrl(standby, true), 'SELECT id FROM ticks')).map((r) => Number(r.id)),
      );
      expect(before.filter((t) => !onNew.has(t.id)).map((t) => t.id)).toEqual([]);
      await primary.stopServer();
      writeUrlFile(roleUrl(standby));
      await waitFor(
        async () => storedWal(store, sysid),
        (names) => names.some((n) => n.startsWith('00000002.history')),
        180_000,
        500,
      );

      const w2 = startWriter(roleUrl(standby, true), after);
      await elapse(3000);
      // the driver reads microseconds as milliseconds: the next millisecond is after the mark still,
      // and long before the next insert
      target = new Date((await w2.mark()).getTime() + 1);
      await elapse(3000);
      await w2.stop();
      // the segment holding the target finished, and stored from timeline 2
      const finished = (
        await sql<{ f: string }>(standby.url(), 'SELECT pg_walfile_name(pg_switch_wal()) AS f')
      )[0]!.f;
      expect(finished.startsWith('00000002')).toBe(true);
      await waitFor(
        async () => storedWal(store, sysid),
        (names) => names.some((n) => n.startsWith(`${finished}-`)),
        180_000,
        500,
      );
      const bases = await waitFor(
        async () => storedBases(store, sysid),
        (b) => b.some((x) => x.timeline === 2 && ['new_timeline', 'first'].includes(x.trigger)),
        240_000,
        500,
      );
      // new_timeline (first, should the store read then hold no base usable on timeline 2)
      const second = bases.find((x) => x.timeline === 2)!;
      await waitFor(
        async () =>
          sample(await scrapeMetrics(d), 'pgmaintd_basebackup_runs_total', {
            result: 'success',
            trigger: second.trigger,
          }) ?? 0,
        (n) => n >= 1,
        30_000,
        250,
      );
      // the slot the archiver streams through exists on the new primary (slots are not replicated)
      const slots = await sql<{ n: number }>(
        standby.url(),
        `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'pgmaintd2_${suffix}'`,
      );
      expect(slots[0]!.n).toBe(1);
    } finally {
      sampler.stop();
      d.child.kill('SIGTERM');
      await d.exited;
    }
    expectNoSecret(d.output(), 'the daemon output');
    for (const p of seen) expectNoSecret(p.cmdline, `the command line of ${p.comm}`);
    expect(seen.some((p) => p.cmdline.includes('pg_receivewal'))).toBe(true);
    expect(seen.some((p) => p.cmdline.includes('pg_basebackup'))).toBe(true);
    expect(after.filter((t) => t.at <= target!).length).toBeGreaterThan(5);
    expect(after.filter((t) => t.at > target!).length).toBeGreaterThan(5);

    const dir = tempPath('pitr-e2e-t2-');
    const restore = spawnCli(
      [
        'pitr',
        'restore',
        '--data-dir',
        dir,
        '--target-time',
        target!.toISOString(),
        '--start',
        '--system-identifier',
        sysid,
      ],
      { DATABASE_URL: roleUrl(standby), PGPASSWORD: PASSWORD, DB_SSL_MODE: 'disable', BACKUP_DIR: store },
    );
    const { code } = await restore.exited;
    try {
      expect(code, restore.output()).toBe(0);
      expect(restore.output()).toContain('recovery is complete');
      expectNoSecret(restore.output(), 'the restore output');
      const port = portOf(restore.output());
      const url = standby.url(DATABASE).replace(/:\d+\//, `:${port}/`);
      const rows = (await sql<{ id: string; at: Date }>(url, 'SELECT id, at FROM ticks ORDER BY id')).map(
        (r) => ({
          id: Number(r.id),
          at: r.at,
        }),
      );
      const got = new Set(rows.map((r) => r.id));
      // every row before the promotion, every row after it up to the target, none after it
      const expected = [...before, ...after].filter((t) => t.at <= target!);
      const missing = expected.filter((t) => !got.has(t.id)).map((t) => t.id);
      if (missing.length > 0) diagnose(d, restore.output(), dir, store, sysid);
      expect(missing).toEqual([]);
      expect(rows.filter((r) => r.at > target!)).toEqual([]);
      expect(rows.length).toBe(expected.length);
      expect(target!.getTime() - rows.at(-1)!.at.getTime()).toBeLessThan(1000);
      console.log(
        `pitr-daemon promotion: ${rows.length} rows restored to ${target!.toISOString()} (${before.length} before the promotion); test ${Math.round((Date.now() - t0) / 1000)} s`,
      );
    } finally {
      stopRestored(standby.binaries.binDir, dir);
    }
  });
});
