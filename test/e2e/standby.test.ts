// pg-maintd on a real streaming hot standby (pg_basebackup -R from a private primary): it stays up
// and serves metrics with its defaults, leaves everything a standby refuses alone, backs up from the
// standby when told to (one backup per slot however many daemons share the store), and picks up its
// waiting work when the standby is promoted under it. The promotion comes last: it ends the pair.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLAIMS_FOLDER } from '../../src/backup/claim.js';
import { cliEnv, getJson, runCli, sample, startDaemon, waitFor, type LogLine } from '../support/daemon.js';
import { caughtUp, sql, startStandbyPair, type StandbyPair } from '../support/standby.js';
import { tempDir } from '../support/temp.js';

const DB = 'app';
let pair: StandbyPair;
let dir: string;

beforeAll(async () => {
  pair = await startStandbyPair([DB]);
  await sql(pair.primary, DB, 'CREATE TABLE items (id int PRIMARY KEY, name text)');
  await sql(pair.primary, DB, "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g");
  await caughtUp(pair);
  dir = tempDir('pgmaintd-standby-');
}, 120_000);

afterAll(async () => {
  await pair?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

type Daemon = Awaited<ReturnType<typeof startDaemon>>;
const metrics = async (d: Daemon) => (await fetch(`${d.base}/metrics`)).text();
const EVERY_2S = '*/2 * * * * *';

/** Every file under a folder, relative to it (none when it does not exist). */
function filesUnder(root: string): string[] {
  try {
    return readdirSync(root, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name).slice(root.length + 1));
  } catch {
    return [];
  }
}

/** The dumps' manifests (or, with `globals`, those of the cluster's globals). */
function manifests(
  store: string,
  globals = false,
): Array<{ tick?: string; systemIdentifier: string; key: string }> {
  return filesUnder(store)
    .filter((f) => f.endsWith('.manifest.json') && f.startsWith('globals/') === globals)
    .map(
      (f) =>
        JSON.parse(readFileSync(join(store, f), 'utf8')) as {
          tick?: string;
          systemIdentifier: string;
          key: string;
        },
    );
}

const said = (d: Daemon, pred: (l: LogLine) => boolean) => d.lines().filter(pred).length;

describe('pg-maintd on a hot standby', () => {
  it('with its defaults it stays up and serves metrics; migrations wait, maintenance, drills and backups are skipped, once said; nothing is written', async () => {
    const store = join(dir, 'defaults');
    const d = await startDaemon(
      cliEnv(pair.standby.url(DB), store, {
        MIGRATE_ON_START: 'true', // the default, which the test helper turns off
        BACKUP_SCHEDULE: EVERY_2S,
        BACKUP_VERIFY_SCHEDULE: EVERY_2S,
        MAINTENANCE_SCHEDULE: EVERY_2S,
        METRICS_INTERVAL: '1s',
        READYZ_INTERVAL: '200ms',
      }),
    );
    try {
      const skipped = (t: string, job: string, reason: string) =>
        sample(t, 'pgmaintd_job_skipped_total', { job, reason }) ?? 0;
      const text = await waitFor(
        () => metrics(d),
        (t) =>
          ['backup', 'verify', 'maintenance'].every((job) => skipped(t, job, 'standby') >= 2) &&
          sample(t, 'pgmaintd_migrations_blocked', { reason: 'standby' }) === 1 &&
          sample(t, 'pgmaintd_server_in_recovery') === 1,
        30_000,
      );
      expect(sample(text, 'pg_replication_is_replica')).toBe(1);
      expect(sample(text, 'pg_replication_lag_seconds')).toBeGreaterThanOrEqual(0);
      expect(sample(text, 'pg_up')).toBe(1);
      for (const job of ['backup', 'verify', 'maintenance'])
        expect(skipped(text, job, 'lease_unusable'), job).toBe(0);
      expect((await getJson(`${d.base}/healthz`)).status).toBe(200);
      expect((await getJson(`${d.base}/readyz`)).status).toBe(200);
      const landing = await fetch(`${d.base}/`);
      expect(landing.status).toBe(200);
      expect(await landing.text()).toContain('href="metrics"');

      // each state said once, however many ticks it skipped
      for (const job of ['backup', 'verify', 'maintenance'])
        expect(
          said(d, (l) => l.job === job && l.reason === 'standby'),
          job,
        ).toBe(1);
      expect(said(d, (l) => l.reason === 'standby' && /start-up migrations wait/.test(l.msg))).toBe(1);
      // nothing a standby refuses was tried: no warning or error beyond the missing extension
      const complaints = d.lines().filter((l) => l.level >= 40 && !/pg_stat_statements/.test(l.msg));
      expect(complaints, JSON.stringify(complaints)).toEqual([]);
      expect(filesUnder(store)).toEqual([]);
      expect(d.child.exitCode).toBeNull();
    } finally {
      d.child.kill('SIGTERM');
      expect((await d.exited).code).toBe(0);
    }
  });

  it('BACKUP_FROM=standby: the daemon on the standby backs up the cluster, the one on the primary skips', async () => {
    const store = join(dir, 'from-standby');
    const env = (url: string) =>
      cliEnv(url, store, { BACKUP_FROM: 'standby', BACKUP_SCHEDULE: EVERY_2S, METRICS_INTERVAL: '1s' });
    const [onPrimary, onStandby] = await Promise.all([
      startDaemon(env(pair.primary.url(DB))),
      startDaemon(env(pair.standby.url(DB))),
    ]);
    try {
      await onStandby.waitForLog((l) => l.msg === 'backup complete', 30_000);
      const t = await waitFor(
        () => metrics(onPrimary),
        (m) => (sample(m, 'pgmaintd_job_skipped_total', { job: 'backup', reason: 'primary' }) ?? 0) >= 1,
      );
      expect(sample(t, 'pgmaintd_backup_runs_total', { result: 'success' })).toBe(0);
      expect(said(onPrimary, (l) => l.msg === 'backup started')).toBe(0);
      const [cluster] = await sql<{ id: string }>(
        pair.primary,
        'postgres',
        'SELECT system_identifier::text AS id FROM pg_control_system()',
      );
      const written = manifests(store);
      expect(written.length).toBeGreaterThanOrEqual(1);
      for (const m of written) expect(m.systemIdentifier).toBe(cluster!.id);
      // the backup holds the primary's rows, replayed on the standby
      const list = await runCli(['backups', 'list', '--json'], env(pair.standby.url(DB)));
      expect(list.code).toBe(0);
      expect(list.out).toContain(written[0]!.key);
      // a backup by hand on the standby: no lease there (its table is read-only), and none needed
      const hand = await runCli(['backup'], { ...env(pair.standby.url(DB)), LOG_LEVEL: 'info' });
      expect(hand.code, hand.out).toBe(0);
      expect(hand.out).toContain('backing up without a lease');
      expect(hand.out).not.toContain('lease_unusable');
      // replay paused (by hand, or a delayed standby): what it would back up is old; refused
      const staleStore = join(dir, 'stale');
      await sql(pair.standby, 'postgres', 'SELECT pg_wal_replay_pause()');
      try {
        await sql(pair.primary, DB, 'CREATE TABLE after_pause AS SELECT 1 AS x');
        const stale = await runCli(['backup'], cliEnv(pair.standby.url(DB), staleStore));
        expect(stale.code, stale.out).toBe(1);
        expect(stale.out).toMatch(/not backed up: the standby has its WAL replay paused/);
        expect(stale.out).toMatch(/fix: resume replay/);
        expect(stale.out).not.toMatch(/\n\s+at \S/);
        expect(filesUnder(staleStore)).toEqual([]);
      } finally {
        await sql(pair.standby, 'postgres', 'SELECT pg_wal_replay_resume()');
      }
    } finally {
      onPrimary.child.kill('SIGTERM');
      onStandby.child.kill('SIGTERM');
      await Promise.all([onPrimary.exited, onStandby.exited]);
    }
  });

  it('daemons on the primary and on the standby sharing one store take one backup per slot (BACKUP_FROM=any)', async () => {
    const store = join(dir, 'shared');
    const env = (url: string) => cliEnv(url, store, { BACKUP_FROM: 'any', BACKUP_SCHEDULE: EVERY_2S });
    const daemons = await Promise.all([
      startDaemon(env(pair.primary.url(DB))),
      startDaemon(env(pair.standby.url(DB))),
    ]);
    try {
      // both were due at the same slots: the losers said who had each one, and each slot a loser
      // gave up was backed up by its winner (waited for: the last winner may still be dumping)
      const claimedTicks = () =>
        daemons.flatMap((d) =>
          d
            .lines()
            .filter((l) => l.reason === 'claimed')
            .map((l) => new Date(l.tick as string).toISOString()),
        );
      await waitFor(
        async () => ({ claimed: claimedTicks(), stored: manifests(store).map((m) => m.tick) }),
        ({ claimed, stored }) => claimed.length >= 3 && claimed.every((t) => stored.includes(t)),
        // a tick's globals and dump take a busy host more than the 2 s between ticks: ticks overlap
        // and are skipped, so three lost claims can take a while
        120_000,
        200,
      );
    } finally {
      for (const d of daemons) d.child.kill('SIGTERM');
      await Promise.all(daemons.map((d) => d.exited));
    }
    const ticks = manifests(store).map((m) => m.tick);
    expect(ticks.length).toBeGreaterThanOrEqual(3);
    expect(new Set(ticks).size, ticks.join(' ')).toBe(ticks.length);
    // the globals once per tick as well: the daemons share only the store, so they claim it there too
    const globalsTicks = manifests(store, true).map((m) => m.tick);
    expect(globalsTicks.length).toBeGreaterThanOrEqual(1);
    expect(new Set(globalsTicks).size, globalsTicks.join(' ')).toBe(globalsTicks.length);
    const claims = filesUnder(join(store, CLAIMS_FOLDER));
    expect(claims.length).toBeGreaterThanOrEqual(ticks.length);
  }, 180_000);

  it('a store that refuses the slot claim fails the backup as the store’s fault, saying so', async () => {
    const store = join(dir, 'claim-refused');
    mkdirSync(store, { recursive: true });
    writeFileSync(join(store, CLAIMS_FOLDER), 'a file where the claims folder goes');
    const d = await startDaemon(
      cliEnv(pair.primary.url(DB), store, {
        BACKUP_FROM: 'any',
        BACKUP_SCHEDULE: EVERY_2S,
        METRICS_INTERVAL: '1s',
      }),
    );
    try {
      const failed = await d.waitForLog((l) => l.msg === 'backup failed; nothing was kept', 30_000);
      expect(failed.reason).toBe('storage');
      expect(String((failed.err as { message: string }).message)).toMatch(
        /^cannot claim the slot in the store: /,
      );
      const t = await waitFor(
        () => metrics(d),
        (m) => (sample(m, 'pgmaintd_backup_failures_total', { reason: 'storage' }) ?? 0) >= 1,
      );
      expect(sample(t, 'pgmaintd_backup_failures_total', { reason: 'database' }) ?? 0).toBe(0);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });

  it('doctor with BACKUP_FROM=standby flags hot_standby_feedback off and a replay delay shorter than a backup', async () => {
    const r = await runCli(
      ['doctor', '--json'],
      cliEnv(pair.standby.url(DB), join(dir, 'doctor'), {
        BACKUP_FROM: 'standby',
        BACKUP_SCHEDULE: '0 2 * * *',
      }),
    );
    const report = JSON.parse(r.out.slice(r.out.indexOf('{\n'))) as {
      findings: Array<{ id: string; status: string; found: string }>;
    };
    const finding = (id: string) => report.findings.find((f) => f.id === id);
    expect(finding('standby.hot_standby_feedback')?.status, r.out).toBe('fail');
    expect(finding('standby.hot_standby_feedback')?.found).toMatch(/^off/);
    expect(finding('standby.max_standby_streaming_delay')?.status).toBe('warn');
    expect(r.code).toBe(1);

    // and against the primary: said to be the wrong server to ask
    const p = await runCli(
      ['doctor', '--json'],
      cliEnv(pair.primary.url(DB), join(dir, 'doctor'), {
        BACKUP_FROM: 'standby',
        BACKUP_SCHEDULE: '0 2 * * *',
      }),
    );
    expect(p.out).toMatch(/this server is a primary/);
  });

  it('promoted while the daemon runs: the waiting migrations apply, backups start, the metrics flip', async () => {
    const store = join(dir, 'promotion');
    // the database holds `items`: the start-up migrations apply only to one under their history,
    // which the primary starts here (0001), so 0002 is what waits for the promotion
    const migrations = join(dir, 'migrations');
    mkdirSync(migrations);
    writeFileSync(join(migrations, '0001_standby_marker.sql'), 'CREATE TABLE standby_marker (id int);\n');
    const up = await runCli(
      ['migrate', 'up'],
      cliEnv(pair.primary.url(DB), join(dir, 'migrate'), { MIGRATIONS_DIR: migrations }),
    );
    expect(up.code, up.out).toBe(0);
    writeFileSync(
      join(migrations, '0002_standby_marker_note.sql'),
      'ALTER TABLE standby_marker ADD COLUMN note text;\n',
    );
    await caughtUp(pair);
    const d = await startDaemon(
      cliEnv(pair.standby.url(DB), store, {
        MIGRATIONS_DIR: migrations,
        MIGRATE_ON_START: 'true',
        BACKUP_SCHEDULE: EVERY_2S,
        MAINTENANCE_SCHEDULE: EVERY_2S,
        METRICS_INTERVAL: '1s',
      }),
    );
    try {
      await waitFor(
        () => metrics(d),
        (t) =>
          sample(t, 'pgmaintd_migrations_blocked', { reason: 'standby' }) === 1 &&
          (sample(t, 'pgmaintd_job_skipped_total', { job: 'backup', reason: 'standby' }) ?? 0) >= 1,
        30_000,
      );
      expect(
        (
          await sql<{ n: string }>(pair.standby, DB, 'SELECT count(*) AS n FROM public.pgmaintd_migrations')
        )[0]!.n,
      ).toBe('1');

      await sql(pair.standby, 'postgres', 'SELECT pg_promote(true, 60)');

      const t = await waitFor(
        () => metrics(d),
        (m) =>
          sample(m, 'pgmaintd_server_in_recovery') === 0 &&
          sample(m, 'pg_replication_is_replica') === 0 &&
          sample(m, 'pgmaintd_migrations_blocked', { reason: 'standby' }) === 0 &&
          sample(m, 'pgmaintd_migrations_pending') === 0 &&
          (sample(m, 'pgmaintd_backup_runs_total', { result: 'success' }) ?? 0) >= 1 &&
          (sample(m, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'success' }) ?? 0) >= 1,
        40_000,
      );
      expect(sample(t, 'pgmaintd_migrations_failed', { reason: 'statement' })).toBe(0);
      await d.waitForLog((l) => l.msg === 'migrations applied');
      const applied = await sql<{ n: string }>(
        pair.standby,
        DB,
        'SELECT count(*) AS n FROM public.pgmaintd_migrations',
      );
      expect(Number(applied[0]!.n)).toBe(2);
      expect(said(d, (l) => /runs again/.test(l.msg) && l.job === 'backup')).toBe(1);
      expect(manifests(store).length).toBeGreaterThanOrEqual(1);
      // BACKUP_FROM=primary (the default): no claim written, none read; the lease alone elects
      expect(existsSync(join(store, CLAIMS_FOLDER))).toBe(false);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });
});
