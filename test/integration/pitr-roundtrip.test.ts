// The round trip of point-in-time recovery on a real PostgreSQL 15: WAL archived by the real
// archive_command (`wal-push`), base backups by the real pg_basebackup, restores by a real server
// replaying through `wal-fetch`, to targets a writer's timestamped rows measure to the row.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DbPool } from '../../src/db/pool.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { Heartbeat } from '../../src/pitr/heartbeat.js';
import { CLI, runCli, spawnCli, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir, tempPath } from '../support/temp.js';

const pgUser = (() => {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
})();

let cluster: LocalCluster;
let store: string;
let client: pg.Client;
let sysid: string;
let env: Record<string, string>;

const q = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) =>
  (await client.query<T>(sql, params)).rows;

/**
 * Switches to a new segment and waits until the one just finished is in the store. A failed
 * archive_command makes the server wait a minute after three tries, so the wait is longer than that;
 * a timeout says what the archiver last failed on and what the server logged.
 */
async function archiveNow(): Promise<string> {
  const f = (await q<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f'))[0]!.f;
  try {
    await waitFor(
      () =>
        q<{ w: string | null; failed: string; lastFailed: string | null }>(
          'SELECT last_archived_wal AS w, failed_count AS failed, last_failed_wal AS "lastFailed" FROM pg_stat_archiver',
        ),
      (r) => r[0]!.w !== null && r[0]!.w >= f,
      150_000,
      100,
    );
  } catch (err) {
    const log = readFileSync(cluster.logFile, 'utf8').split('\n').slice(-40);
    throw new Error(
      `${(err as Error).message} (waiting for ${f}); the server's log ends:\n${log.join('\n')}`,
    );
  }
  return f;
}

function baseDir(): string {
  return join(store, 'pitr', sysid, 'base');
}

function walDir(): string {
  return join(store, 'pitr', sysid, 'wal');
}

/** The server a restore left running on `dir`, stopped. */
function stopRestored(dir: string) {
  if (!existsSync(join(dir, 'postmaster.pid'))) return;
  spawnSync(join(cluster.binaries.binDir, 'pg_ctl'), ['-D', dir, '-m', 'immediate', '-w', 'stop'], {
    ...pgUser,
    cwd: '/',
    stdio: 'ignore',
  });
}

function portOf(out: string): number {
  const m = /port=(\d+)/.exec(out);
  if (!m) throw new Error(`no port in the restore's output:\n${out}`);
  return Number(m[1]);
}

async function onRestored<T>(port: number, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: cluster.url().replace(/:\d+\//, `:${port}/`) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  store = tempDir('pitr-store-');
  // wal-push runs as the server's user: the store must be its to write
  chownSync(store, pgUser.uid, pgUser.gid);
  cluster = await startPrivateCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'BACKUP_DIR=${store} ${process.execPath} ${CLI} wal-push %p'`,
      // fresh segments are zeros: switched segments compress to almost nothing
      wal_recycle: 'off',
    },
  });
  client = new pg.Client({ connectionString: cluster.url() });
  await client.connect();
  sysid = (await q<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!.id;
  env = { DATABASE_URL: cluster.url(), BACKUP_DIR: store, DB_SSL_MODE: 'disable' };
  await q('CREATE TABLE ticks(at timestamptz DEFAULT clock_timestamp())');
  await archiveNow(); // the store's WAL folder is the server user's before pg-maintd writes beside it
}, 180_000);

afterAll(async () => {
  await client?.end().catch(() => undefined);
});

describe('base backup', () => {
  // first: a base backup taken after it replays from after its CREATE and DROP TABLESPACE
  it('refuses a server with a tablespace outside its data directory, naming it', async () => {
    const loc = tempDir('pitr-ts-');
    chownSync(loc, pgUser.uid, pgUser.gid);
    await q(`CREATE TABLESPACE elsewhere LOCATION '${loc}'`);
    try {
      const r = await runCli(['basebackup'], env);
      expect(r.code).toBe(65);
      expect(r.out).toMatch(/tablespaces outside its data directory \(elsewhere\)/);
      expect(existsSync(baseDir()) ? readdirSync(baseDir()) : []).toEqual([]);
    } finally {
      await q('DROP TABLESPACE elsewhere');
    }
  }, 60_000);
  it('streams a tar with backup_label and backup_manifest to the store, with a manifest that matches', async () => {
    const r = await runCli(['basebackup'], env);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/base backup: .*\.tar\.gz \(\d+ bytes/);
    const names = readdirSync(baseDir());
    const data = names.find((n) => n.endsWith('.tar.gz'))!;
    const manifest = JSON.parse(readFileSync(join(baseDir(), `${data}.manifest.json`), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(manifest.systemIdentifier).toBe(sysid);
    expect(manifest.timeline).toBe(1);
    expect(manifest.trigger).toBe('command');
    const lsn = (s: unknown) => {
      const [hi, lo] = String(s).split('/');
      return (BigInt(parseInt(hi!, 16)) << 32n) | BigInt(parseInt(lo!, 16));
    };
    expect(lsn(manifest.stopLsn)).toBeGreaterThan(lsn(manifest.startLsn));
    expect(manifest.startWalFile).toMatch(/^00000001/);
    const body = readFileSync(join(baseDir(), data));
    expect(manifest.size).toBe(body.length);
    expect(manifest.sha256).toBe(createHash('sha256').update(body).digest('hex'));
    const members = execFileSync('tar', ['-tzf', join(baseDir(), data)], { encoding: 'utf8' }).split('\n');
    expect(members).toContain('backup_label');
    expect(members).toContain('backup_manifest');
  }, 120_000);

  it('leaves nothing in the store when pg_basebackup fails (a role without REPLICATION)', async () => {
    await q("CREATE ROLE norepl LOGIN PASSWORD 'norepl-pw'");
    const before = readdirSync(baseDir()).sort();
    const url = cluster.url('postgres', 'norepl', 'norepl-pw');
    const r = await runCli(['basebackup'], { ...env, DATABASE_URL: url });
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/pg_basebackup exited/);
    expect(r.out).toMatch(/REPLICATION/);
    expect(r.out).not.toContain('norepl-pw');
    expect(readdirSync(baseDir()).sort()).toEqual(before);
  }, 120_000);
});

describe('restore', () => {
  it('recovers to each of several target times to within a second, never past it', async () => {
    // a writer inserts a timestamped row every 100 ms while the targets are taken
    let writing = true;
    const writer = (async () => {
      const w = new pg.Client({ connectionString: cluster.url() });
      await w.connect();
      while (writing) {
        await w.query('INSERT INTO ticks DEFAULT VALUES');
        await new Promise((r) => setTimeout(r, 100));
      }
      await w.end();
    })();
    const targets: Date[] = [];
    const clock = async () => (await q<{ t: Date }>('SELECT clock_timestamp() AS t'))[0]!.t;
    const until = async (ms: number) => {
      const t0 = Date.now();
      await waitFor(
        async () => Date.now() - t0,
        (d) => d >= ms,
        ms + 5000,
        50,
      );
    };
    for (const wait of [1500, 1700, 1300]) {
      await until(wait);
      targets.push(await clock());
    }
    await until(1000);
    writing = false;
    await writer;
    await archiveNow();
    for (const target of targets) {
      const dir = tempPath('pitr-restore-');
      const r = await runCli(
        ['pitr', 'restore', '--data-dir', dir, '--target-time', target.toISOString(), '--start'],
        env,
      );
      try {
        expect(r.code, r.out).toBe(0);
        expect(r.out).toContain('recovery is complete');
        const newest = await onRestored(
          portOf(r.out),
          async (c) => (await c.query<{ m: Date }>('SELECT max(at) AS m FROM ticks')).rows[0]!.m,
        );
        expect(newest.getTime()).toBeLessThanOrEqual(target.getTime());
        expect(target.getTime() - newest.getTime()).toBeLessThan(1000);
        expect(existsSync(join(dir, 'PGMAINTD_RESTORE_INCOMPLETE'))).toBe(false);
      } finally {
        stopRestored(dir);
      }
    }
  }, 300_000);

  it('refuses a non-empty --data-dir, writing nothing', async () => {
    const dir = tempDir('pitr-full-');
    writeFileSync(join(dir, 'keep'), 'mine');
    const r = await runCli(['pitr', 'restore', '--data-dir', dir, '--latest'], env);
    expect(r.code).toBe(64);
    expect(r.out).toMatch(/is not empty/);
    expect(readdirSync(dir)).toEqual(['keep']);
  });

  it('refuses a target before the oldest base backup or after the newest WAL, naming the window', async () => {
    const r = await runCli(
      ['pitr', 'restore', '--data-dir', tempPath('pitr-early-'), '--target-time', '2001-01-01T00:00:00Z'],
      env,
    );
    expect(r.code).toBe(65);
    expect(r.out).toMatch(/restorable: from \d{4}-.* to about/);
    const late = await runCli(
      ['pitr', 'restore', '--data-dir', tempPath('pitr-late-'), '--target-time', '2099-01-01T00:00:00Z'],
      env,
    );
    expect(late.code).toBe(65);
    expect(late.out).toMatch(/after the newest stored WAL: restorable: from \d{4}-.* to about/);
  });

  it('refuses a --target-time without a zone, or finer than the microsecond PostgreSQL keeps, before writing anything', async () => {
    for (const [time, said] of [
      ['2026-12-02 21:15:00', /is not a time with a zone/],
      ['2026-12-02T21:15:00.1234567Z', /has more than 6 decimals/],
    ] as const) {
      const dir = tempPath('pitr-badtime-');
      const r = await runCli(['pitr', 'restore', '--data-dir', dir, '--target-time', time], env);
      expect(r.code, r.out).toBe(64);
      expect(r.out).toMatch(said);
      expect(r.out).not.toMatch(/\n\s+at /);
      expect(existsSync(dir)).toBe(false);
    }
  });

  it('writes a --target-time given to the microsecond as it is, and stops there', async () => {
    const micros = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
    await q('INSERT INTO ticks SELECT clock_timestamp() FROM generate_series(1, 3)');
    const [{ last, row }] = (await q<{ last: string; row: string }>(
      `SELECT to_char(max(at) AT TIME ZONE 'UTC', ${micros}) AS last,
              to_char(clock_timestamp() AT TIME ZONE 'UTC', ${micros}) AS row FROM ticks`,
    )) as [{ last: string; row: string }];
    // the target, read after the insert committed, lies between its commit and the next one's
    await q('INSERT INTO ticks SELECT clock_timestamp() FROM generate_series(1, 3)');
    await archiveNow();
    const dir = tempPath('pitr-micros-');
    const r = await runCli(['pitr', 'restore', '--data-dir', dir, '--target-time', row, '--start'], env);
    try {
      expect(r.code, r.out).toBe(0);
      const auto = readFileSync(join(dir, 'postgresql.auto.conf'), 'utf8');
      expect(auto).toContain(`recovery_target_time = '${row.replace('T', ' ').replace('Z', '+00')}'`);
      const newest = await onRestored(
        portOf(r.out),
        async (c) =>
          (
            await c.query<{ t: string }>(
              `SELECT to_char(max(at) AT TIME ZONE 'UTC', ${micros}) AS t FROM ticks`,
            )
          ).rows[0]!.t,
      );
      expect(newest).toBe(last);
    } finally {
      stopRestored(dir);
    }
  }, 240_000);

  it('stops on SIGTERM: the server and tar are stopped, the directory marked incomplete, exit 143', async () => {
    const dir = tempPath('pitr-sigterm-');
    const cli = spawnCli(['pitr', 'restore', '--data-dir', dir, '--latest', '--start'], env);
    await cli.waitForLog((l) => l.msg === 'restoring from this base backup', 60_000);
    cli.child.kill('SIGTERM');
    const { code } = await cli.exited;
    try {
      expect(code, cli.output()).toBe(143);
      expect(cli.output()).toMatch(/interrupted by SIGTERM: .* is incomplete/);
      expect(existsSync(join(dir, 'PGMAINTD_RESTORE_INCOMPLETE'))).toBe(true);
      expect(existsSync(join(dir, 'postmaster.pid'))).toBe(false);
    } finally {
      stopRestored(dir);
    }
  }, 120_000);

  it('stops at a corrupt WAL object with its key named, not a silently shorter recovery', async () => {
    await q('INSERT INTO ticks DEFAULT VALUES');
    const last = await archiveNow();
    const base = JSON.parse(
      readFileSync(
        join(
          baseDir(),
          readdirSync(baseDir()).find((n) => n.endsWith('.manifest.json'))!,
        ),
        'utf8',
      ),
    ) as { stopWalFile: string };
    // a segment after the base backup's end and before the last one
    const victim = readdirSync(walDir())
      .filter((n) => /^[0-9A-F]{24}-/.test(n))
      .sort()
      .find((n) => n.slice(0, 24) > base.stopWalFile && n.slice(0, 24) < last)!;
    expect(victim).toBeDefined();
    const path = join(walDir(), victim);
    const original = readFileSync(path);
    const content = gunzipSync(original);
    content[100] = content[100]! ^ 0xff;
    writeFileSync(path, gzipSync(content));
    const dir = tempPath('pitr-corrupt-');
    try {
      const r = await runCli(['pitr', 'restore', '--data-dir', dir, '--latest', '--start'], env);
      expect(r.code).not.toBe(0);
      expect(r.out).toContain(victim);
      expect(r.out).toMatch(/corrupt/);
      expect(existsSync(join(dir, 'PGMAINTD_RESTORE_INCOMPLETE'))).toBe(true);
    } finally {
      stopRestored(dir);
      writeFileSync(path, original);
    }
  }, 300_000);

  it('refuses a restore across a missing WAL segment, naming it', async () => {
    const base = JSON.parse(
      readFileSync(
        join(
          baseDir(),
          readdirSync(baseDir()).find((n) => n.endsWith('.manifest.json'))!,
        ),
        'utf8',
      ),
    ) as { stopWalFile: string };
    const segs = readdirSync(walDir())
      .filter((n) => /^[0-9A-F]{24}-/.test(n))
      .sort();
    const victim = segs.find((n) => n.slice(0, 24) > base.stopWalFile && n !== segs.at(-1))!;
    const aside = tempPath('pitr-aside-');
    renameSync(join(walDir(), victim), aside);
    try {
      const r = await runCli(['pitr', 'restore', '--data-dir', tempPath('pitr-gap-'), '--latest'], env);
      expect(r.code).toBe(65);
      expect(r.out).toContain(`WAL segment ${victim.slice(0, 24)} is missing`);
      const v = spawnCli(['pitr', 'verify', '--json'], env);
      expect((await v.exited).code).toBe(1);
      const report = JSON.parse(v.stdout()) as { problems: Array<{ missing: string }> };
      expect(report.problems[0]!.missing).toBe(victim.slice(0, 24));
    } finally {
      renameSync(aside, join(walDir(), victim));
    }
  }, 60_000);
});

describe('pitr list, verify and the drill', () => {
  it('lists base backups, WAL and the window as JSON; verify passes without a gap', async () => {
    const r = spawnCli(['pitr', 'list', '--json'], env);
    expect((await r.exited).code, r.output()).toBe(0);
    const s = JSON.parse(r.stdout()) as {
      systemIdentifier: string;
      bases: Array<{ key: string; consistent: boolean; timeline: number }>;
      wal: Array<{ timeline: number; segments: number }>;
      window: { earliest: string; latest: string; latestIsApproximate: boolean };
    };
    expect(s.systemIdentifier).toBe(sysid);
    expect(s.bases).toHaveLength(1);
    expect(s.bases[0]!.consistent).toBe(true);
    expect(s.wal[0]!.timeline).toBe(1);
    expect(s.wal[0]!.segments).toBeGreaterThan(2);
    expect(Date.parse(s.window.latest)).toBeGreaterThan(Date.parse(s.window.earliest));
    expect(s.window.latestIsApproximate).toBe(true);
    const v = await runCli(['pitr', 'verify'], env);
    expect(v.code, v.out).toBe(0);
    expect(v.out).toMatch(/: ok, WAL reaches 00000001/);
  }, 60_000);

  it('drill: restores to just before the newest heartbeat and finds the one before it, however late it was written', async () => {
    // the table as it was before heartbeats were numbered: the real heartbeat writer adds the number
    await q('CREATE SCHEMA IF NOT EXISTS pgmaintd');
    await q('CREATE TABLE pgmaintd.pitr_heartbeat(id int PRIMARY KEY, at timestamptz NOT NULL)');
    await q('INSERT INTO pgmaintd.pitr_heartbeat VALUES (1, clock_timestamp())');
    const pool = new DbPool(
      {
        url: cluster.url(),
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 10_000 },
      },
      { name: 'heartbeat-test', logger: createLogger({ level: 'silent', format: 'json' }) },
    );
    const heartbeat = new Heartbeat({
      pool,
      intervalMs: 1000,
      logger: createLogger({ level: 'silent', format: 'json' }),
    });
    // heartbeats 2.5 s apart and more while PITR_HEARTBEAT_INTERVAL says 1 s: a writer late on a busy
    // host. Each is archived at once (archive_command mode archives finished segments only), so the
    // store holds the newest heartbeat's WAL when the drill starts, right after the last one.
    const beats: number[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 2500));
        beats.push(await heartbeat.beat());
        await archiveNow();
      }
    } finally {
      await pool.stop();
    }
    const seq = await q<{ seq: string }>('SELECT seq::text AS seq FROM pgmaintd.pitr_heartbeat');
    expect(seq[0]!.seq).toBe('4');
    const denv = { ...env, PITR_HEARTBEAT_INTERVAL: '1s', WAL_PARTIAL_UPLOAD_INTERVAL: '1s' };
    const cli = spawnCli(['pitr', 'drill', '--json'], denv);
    // WAL anything else writes meanwhile (autovacuum) is archived too, as archive_timeout would: the
    // drill waits for the store to reach where the server was when it read the newest heartbeat
    let drilling = true;
    const archiving = (async () => {
      while (drilling) {
        await archiveNow();
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const { code } = await cli.exited.finally(() => {
      drilling = false;
    });
    await archiving;
    expect(code, cli.output()).toBe(0);
    const rec = JSON.parse(cli.stdout()) as {
      result: string;
      target: string;
      newestHeartbeat: string;
      precisionSeconds: number;
      recoveryTargetTime: string;
      heartbeatNumber: string;
      expectedHeartbeatNumber: string;
      key: string;
    };
    expect(rec.result, cli.output()).toBe('ok');
    expect([rec.heartbeatNumber, rec.expectedHeartbeatNumber]).toEqual(['3', '3']);
    expect(rec.recoveryTargetTime).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00$/);
    const [before, last] = beats.slice(-2) as [number, number];
    // the target is the microsecond before the last heartbeat; the row found is the one before it
    expect(Math.abs(Date.parse(rec.target) / 1000 - last), cli.output()).toBeLessThan(0.002);
    expect(Math.abs(Date.parse(rec.newestHeartbeat) / 1000 - before), cli.output()).toBeLessThan(0.002);
    expect(rec.precisionSeconds).toBeGreaterThan(2.4);
    expect(Math.abs(rec.precisionSeconds - (last - before))).toBeLessThan(0.002);
    expect(cli.output()).toContain('the restore itself was exact');
    expect(existsSync(join(store, rec.key))).toBe(true);
  }, 360_000);

  it('--target-name with --pause stops at the restore point and stays paused; --target-lsn stops at the position', async () => {
    const before = (await q<{ n: string }>('SELECT count(*) AS n FROM ticks'))[0]!.n;
    await q("SELECT pg_create_restore_point('before_five')");
    await q('INSERT INTO ticks SELECT clock_timestamp() FROM generate_series(1, 5)');
    const lsn = (await q<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))[0]!.l;
    const afterFive = (await q<{ n: string }>('SELECT count(*) AS n FROM ticks'))[0]!.n;
    await q('INSERT INTO ticks SELECT clock_timestamp() FROM generate_series(1, 7)');
    await archiveNow();

    const paused = tempPath('pitr-name-');
    try {
      const r = await runCli(
        ['pitr', 'restore', '--data-dir', paused, '--target-name', 'before_five', '--pause', '--start'],
        env,
      );
      expect(r.code, r.out).toBe(0);
      expect(r.out).toContain('recovery is paused at the target');
      const got = await onRestored(portOf(r.out), async (c) => ({
        state: (await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s,
        n: (await c.query<{ n: string }>('SELECT count(*) AS n FROM ticks')).rows[0]!.n,
      }));
      expect(got).toEqual({ state: 'paused', n: before });
    } finally {
      stopRestored(paused);
    }

    const atLsn = tempPath('pitr-lsn-');
    try {
      const r = await runCli(['pitr', 'restore', '--data-dir', atLsn, '--target-lsn', lsn, '--start'], env);
      expect(r.code, r.out).toBe(0);
      const n = await onRestored(
        portOf(r.out),
        async (c) => (await c.query<{ n: string }>('SELECT count(*) AS n FROM ticks')).rows[0]!.n,
      );
      expect(n).toBe(afterFive);
    } finally {
      stopRestored(atLsn);
    }
  }, 300_000);

  it('--latest after the primary stopped hard: everything archived is there', async () => {
    await q('CREATE TABLE last_words(x text)');
    await q("INSERT INTO last_words VALUES ('archived')");
    const n = (await q<{ n: string }>('SELECT count(*) AS n FROM ticks'))[0]!.n;
    await archiveNow();
    await client.end();
    spawnSync(join(cluster.binaries.binDir, 'pg_ctl'), ['-D', cluster.dataDir, '-m', 'immediate', 'stop'], {
      ...pgUser,
      cwd: '/',
      stdio: 'ignore',
    });
    const dir = tempPath('pitr-latest-');
    try {
      const r = await runCli(
        ['pitr', 'restore', '--data-dir', dir, '--latest', '--start', '--system-identifier', sysid],
        env,
      );
      expect(r.code, r.out).toBe(0);
      const got = await onRestored(portOf(r.out), async (c) => ({
        words: (await c.query<{ x: string }>('SELECT x FROM last_words')).rows.map((x) => x.x),
        n: (await c.query<{ n: string }>('SELECT count(*) AS n FROM ticks')).rows[0]!.n,
      }));
      expect(got.words).toEqual(['archived']);
      expect(got.n).toBe(n);
    } finally {
      stopRestored(dir);
    }
  }, 300_000);
});
