// Leader election against other roles and flaky sessions, through real daemons (`pg-maintd run`
// from dist/) and the real CLI. pg-maintd runs as a non-superuser role of its own that owns its
// database; a second non-superuser LOGIN role plays the attacker. Each fault checks that the daemon
// stays up (/healthz 200 throughout), that the work is done or skipped as it should be, that the
// log says why at the right level, and that the metrics show it.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/backup/catalog.js';
import { LOCK_NAMESPACE } from '../../src/db/advisory-lock.js';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { DbPool } from '../../src/db/pool.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { createLogger } from '../../src/log/logger.js';
import { asLeader } from '../../src/db/leader.js';
import { readStored } from '../support/backup.js';
import {
  cliEnv,
  sample,
  scrapeMetrics,
  spawnCli,
  startDaemon,
  waitFor,
  watchHealth,
  type SpawnedCli,
} from '../support/daemon.js';
import { adminUrl, withDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';
import { tempDir } from '../support/temp.js';

const suffix = Math.random().toString(16).slice(2, 8);
const ROLE = `pgm_lease_${suffix}`; // pg-maintd's own role
const ATTACKER = `intruder_${suffix}`;
const PASSWORD = `pw-${suffix}-lease`;
const DATABASE = `app_lease_${suffix}`;

function urlAs(role: string, database = DATABASE): string {
  const u = new URL(withDatabase(adminUrl(), database));
  u.username = role;
  u.password = PASSWORD;
  return u.toString();
}

async function admin(sql: string, database?: string): Promise<void> {
  const c = new pg.Client({ connectionString: database ? withDatabase(adminUrl(), database) : adminUrl() });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A session of the attacker's, kept open for the test. */
async function attackerSession(database = DATABASE, applicationName = 'not-pg-maintd'): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: urlAs(ATTACKER, database), application_name: applicationName });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

function envFor(dir: string, extra: Record<string, string> = {}, database = DATABASE) {
  return cliEnv(urlAs(ROLE, database), dir, { LEASE_TTL: '3s', ...extra });
}

const metrics = scrapeMetrics;

/** Backup runs seen in logs: [start, end] in ms by runId (end: complete or failed). */
function runsOf(...procs: SpawnedCli[]): Array<{ runId: string; pid: number; start: number; end?: number }> {
  const runs = new Map<string, { runId: string; pid: number; start: number; end?: number }>();
  for (const p of procs)
    for (const l of p.lines()) {
      const id = l.runId as string | undefined;
      if (!id || l.job !== 'backup') continue;
      if (l.msg === 'backup started')
        runs.set(id, { runId: id, pid: l.pid as number, start: Date.parse(String(l.time)) });
      else if ((l.msg === 'backup complete' || l.msg === 'backup failed; nothing was kept') && runs.has(id))
        runs.get(id)!.end = Date.parse(String(l.time));
    }
  return [...runs.values()].sort((a, b) => a.start - b.start);
}

/** No two runs overlap in time (a run still going counts as going on to the end of time). */
function expectOneAtATime(runs: ReturnType<typeof runsOf>) {
  for (let i = 1; i < runs.length; i++) {
    const prev = runs[i - 1]!;
    expect(
      prev.end,
      `run ${prev.runId} (pid ${prev.pid}) still going when ${runs[i]!.runId} (pid ${runs[i]!.pid}) started`,
    ).toBeDefined();
    expect(runs[i]!.start, `runs ${prev.runId} and ${runs[i]!.runId} overlap`).toBeGreaterThanOrEqual(
      prev.end!,
    );
  }
}

beforeAll(async () => {
  await admin(`CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`);
  await admin(`CREATE ROLE ${ATTACKER} LOGIN PASSWORD '${PASSWORD}'`);
  await admin(`CREATE DATABASE ${DATABASE} OWNER ${ROLE}`);
  const p = new pg.Pool({ connectionString: urlAs(ROLE), max: 1 });
  try {
    await seed(p, 50, 2);
    // ~70 MB of dump that gzip -9 on one thread takes several seconds over: runs that outlast a
    // two-second tick, so that ticks come while one runs
    await p.query(`CREATE TABLE blobs AS
      SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(g::text) AS a FROM generate_series(1, 1200000) g`);
  } finally {
    await p.end();
  }
}, 120_000);

afterAll(async () => {
  await admin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`);
  await admin(`DROP ROLE IF EXISTS ${ATTACKER}`).catch(() => undefined);
  await admin(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => undefined);
});

const SLOW = { BACKUP_COMPRESSION_LEVEL: '9', BACKUP_COMPRESSION_THREADS: '1' };

describe('another role', () => {
  it("holding the advisory keys pg-maintd's leader election used stops neither backups nor maintenance", async () => {
    const intruder = await attackerSession();
    for (const job of ['backup', 'verify', 'maintenance'])
      await intruder.query('SELECT pg_advisory_lock($1, hashtext($2))', [
        LOCK_NAMESPACE,
        `${job}:${DATABASE}`,
      ]);
    const dir = tempDir('pgmaintd-lease-keys-');
    const d = await startDaemon(
      envFor(dir, { BACKUP_SCHEDULE: '*/2 * * * * *', MAINTENANCE_SCHEDULE: '*/3 * * * * *' }),
    );
    const health = watchHealth(d);
    try {
      await d.waitForLog((l) => l.msg === 'backup complete', 45_000);
      const text = await waitFor(
        () => metrics(d),
        (t) => (sample(t, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'success' }) ?? 0) > 0,
        30_000,
        250,
      );
      for (const job of ['backup', 'maintenance'])
        for (const reason of ['not_leader', 'lease_unusable'])
          expect(sample(text, 'pgmaintd_job_skipped_total', { job, reason }), `${job} ${reason}`).toBe(0);
      expect(d.lines().filter((l) => l.level >= 40 && /lease/.test(l.msg))).toEqual([]);
    } finally {
      const statuses = await health();
      d.child.kill('SIGTERM');
      expect((await d.exited).code).toBe(EXIT.OK);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      await intruder.end();
    }
  });

  it('cannot write the lease table or put anything in its schema', async () => {
    // the table exists by now (the test above created it as pg-maintd's role)
    const intruder = await attackerSession();
    try {
      for (const sql of [
        "INSERT INTO pgmaintd.leases VALUES ('backup:x', 'me', 't', now(), now() + interval '1 day')",
        "UPDATE pgmaintd.leases SET expires_at = now() + interval '1 day'",
        'DELETE FROM pgmaintd.leases',
        'TRUNCATE pgmaintd.leases',
        'CREATE TABLE pgmaintd.other (id int)',
        'CREATE FUNCTION pgmaintd.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
      ]) {
        const code = await intruder.query(sql).then(
          () => 'ok',
          (e: { code?: string }) => e.code,
        );
        expect(code, sql).toBe('42501');
      }
    } finally {
      await intruder.end();
    }
  });

  it('squatting the lease schema: every tick is skipped as lease_unusable at warn, with the fix; after the fix, backups resume', async () => {
    const squatted = `${DATABASE}_sq`;
    await admin(`CREATE DATABASE ${squatted} OWNER ${ROLE}`);
    try {
      // created before pg-maintd ever ran there, with a table anyone may write
      await admin(`GRANT CREATE ON DATABASE ${squatted} TO ${ATTACKER}`);
      const intruder = await attackerSession(squatted);
      await intruder.query(`CREATE SCHEMA pgmaintd;
        CREATE TABLE pgmaintd.leases (name text PRIMARY KEY, holder text, token text, acquired_at timestamptz, expires_at timestamptz);
        GRANT USAGE ON SCHEMA pgmaintd TO PUBLIC; GRANT ALL ON pgmaintd.leases TO PUBLIC`);
      await intruder.end();
      const dir = tempDir('pgmaintd-lease-squat-');
      const d = await startDaemon(envFor(dir, { BACKUP_SCHEDULE: '*/2 * * * * *' }, squatted));
      const health = watchHealth(d);
      try {
        const warn = await d.waitForLog((l) => l.reason === 'lease_unusable', 30_000);
        expect(warn.level).toBe(40);
        expect(warn.msg).toMatch(
          new RegExp(
            `the schema pgmaintd is owned by ${ATTACKER}, not by pg-maintd's role ${ROLE} or a superuser.*this tick is skipped`,
          ),
        );
        expect(String(warn.hint)).toMatch(
          new RegExp(`DROP SCHEMA pgmaintd CASCADE; CREATE SCHEMA pgmaintd AUTHORIZATION ${ROLE};`),
        );
        const text = await waitFor(
          () => metrics(d),
          (t) =>
            (sample(t, 'pgmaintd_job_skipped_total', { job: 'backup', reason: 'lease_unusable' }) ?? 0) >= 2,
          20_000,
          250,
        );
        expect(sample(text, 'pgmaintd_backup_runs_total', { result: 'success' })).toBe(0);
        expect(await new Catalog(new FsStorage(dir)).latest(squatted)).toBeUndefined();
        // pg-maintd wrote nothing into the attacker's table
        const peek = await attackerSession(squatted);
        expect((await peek.query('SELECT * FROM pgmaintd.leases')).rows).toEqual([]);
        await peek.end();

        // a DBA runs the fix the log names; the next tick backs up
        const sql = /(DROP SCHEMA .*?;\s*CREATE SCHEMA .*?;)/.exec(String(warn.hint))![1]!;
        await admin(sql, squatted);
        const mark = d.lines().length;
        await waitFor(
          async () =>
            d
              .lines()
              .slice(mark)
              .some((l) => l.msg === 'backup complete'),
          (x) => x,
          30_000,
          200,
        );
        expect(await new Catalog(new FsStorage(dir)).latest(squatted)).toBeDefined();
      } finally {
        const statuses = await health();
        d.child.kill('SIGTERM');
        expect((await d.exited).code).toBe(EXIT.OK);
        expect(statuses.filter((s) => s !== 200)).toEqual([]);
      }
    } finally {
      await admin(`DROP DATABASE IF EXISTS ${squatted} WITH (FORCE)`);
    }
  });
});

describe('sessions that end under pg-maintd', () => {
  it('idle_session_timeout on pg-maintd’s role: two replicas still run one backup at a time, one per tick', async () => {
    await admin(`ALTER ROLE ${ROLE} SET idle_session_timeout = '1s'`);
    const dir = tempDir('pgmaintd-lease-idle-');
    try {
      const env = envFor(dir, { BACKUP_SCHEDULE: '*/2 * * * * *', ...SLOW });
      const replicas = await Promise.all([startDaemon(env), startDaemon(env)]);
      const healths = replicas.map(watchHealth);
      try {
        // backups that outlast the tick (and the idle timeout), so that ticks come while one runs
        await waitFor(
          async () => runsOf(...replicas).filter((r) => r.end !== undefined).length,
          (n) => n >= 3,
          90_000,
          250,
        );
        const runs = runsOf(...replicas);
        expectOneAtATime(runs);
        const ticks = (await new Catalog(new FsStorage(dir)).list(DATABASE)).good.map((g) => g.manifest.tick);
        expect(ticks.length).toBeGreaterThanOrEqual(3);
        expect(new Set(ticks).size).toBe(ticks.length); // one backup per tick
        // the timeout did strike pg-maintd's idle sessions meanwhile, and ticks did find a run going
        const all = replicas.flatMap((r) => r.lines());
        expect(all.some((l) => /idle-session timeout/.test(JSON.stringify(l)))).toBe(true);
        expect(all.some((l) => l.msg === 'another pg-maintd holds the lease for this tick; skipped')).toBe(
          true,
        );
      } finally {
        const statuses = await Promise.all(healths.map((h) => h()));
        for (const r of replicas) r.child.kill('SIGTERM');
        for (const r of replicas) expect((await r.exited).code).toBe(EXIT.OK);
        for (const seen of statuses) expect(seen.filter((s) => s !== 200)).toEqual([]);
      }
    } finally {
      await admin(`ALTER ROLE ${ROLE} RESET idle_session_timeout`);
    }
  }, 150_000); // the wait above allows 90 s: each tick stores the globals too
});

describe('`pg-maintd backup` by hand and the scheduled backup', () => {
  it('never run at once: each refuses or skips while the other holds the lease, naming it', async () => {
    const dir = tempDir('pgmaintd-lease-cli-');
    const d = await startDaemon(envFor(dir, { BACKUP_SCHEDULE: '*/2 * * * * *', ...SLOW }));
    const clis: SpawnedCli[] = [];
    try {
      // 1. the daemon is backing up: the command refuses at once with 75, naming the holder
      await d.waitForLog((l) => l.msg === 'backup started', 30_000);
      const refused = spawnCli(['backup'], envFor(dir, SLOW));
      clis.push(refused);
      const t0 = Date.now();
      expect((await refused.exited).code, refused.output()).toBe(EXIT.TEMPFAIL);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(refused.output()).toMatch(
        new RegExp(
          `pg-maintd: backup of ${DATABASE} not started: another pg-maintd holds its lease \\(\\S+ pid ${d.child.pid}, since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z, expires \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\)\\n  fix: .*try again`,
        ),
      );
      expect(refused.lines().some((l) => l.msg === 'backup started')).toBe(false);

      // 2. the command is backing up: the daemon's ticks stand aside, naming it
      await waitFor(
        async () => runsOf(d).every((r) => r.end !== undefined),
        (x) => x,
        30_000,
        50,
      );
      let manual: SpawnedCli | undefined;
      for (let i = 0; i < 20 && !manual; i++) {
        const cli = spawnCli(['backup'], envFor(dir, SLOW));
        clis.push(cli);
        // a command that lost the race to the daemon exits 75 before logging a start
        const started = await cli
          .waitForLog((l) => l.msg === 'backup started', 30_000)
          .then(
            () => true,
            () => false,
          );
        if (started) manual = cli; // else the daemon won that race: try again
      }
      expect(manual, 'a manual backup got the lease').toBeDefined();
      const skip = await d.waitForLog(
        (l) =>
          l.msg === 'another pg-maintd holds the lease for this tick; skipped' &&
          String(l.holder).includes(`pid ${manual!.child.pid},`),
        30_000,
      );
      expect(skip.level).toBe(30);
      expect((await manual!.exited).code, manual!.output()).toBe(0);
      // and afterwards the schedule goes on
      const mark = d.lines().length;
      await waitFor(
        async () =>
          d
            .lines()
            .slice(mark)
            .some((l) => l.msg === 'backup complete'),
        (x) => x,
        30_000,
        200,
      );
      expectOneAtATime(runsOf(d, ...clis));
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
    // each step waits on its own condition; on a loaded machine the steps together take over a minute
  }, 240_000);

  it("leave pg-maintd's leases out of the backup, and a database holding only them counts as empty for a restore", async () => {
    const small = `${DATABASE}_sm`;
    const target = `${DATABASE}_tg`;
    await admin(`CREATE DATABASE ${small} OWNER ${ROLE}`);
    await admin(`CREATE DATABASE ${target} OWNER ${ROLE}`);
    try {
      const p = new pg.Pool({ connectionString: urlAs(ROLE, small), max: 1 });
      await seed(p, 5, 1).finally(() => p.end());
      const dir = tempDir('pgmaintd-lease-dump-');
      const backup = spawnCli(['backup'], envFor(dir, {}, small));
      expect((await backup.exited).code, backup.output()).toBe(0);
      const catalog = new Catalog(new FsStorage(dir));
      const good = (await catalog.latest(small))!;
      expect(Object.keys(good.manifest.rowCounts).sort()).toEqual([
        'public.projects',
        'public.tasks',
        'public.users',
      ]);
      const { text } = await readStored(await catalog.storage.getStream(good.key));
      expect(text).toMatch(/CREATE TABLE public\.users/);
      expect(text).not.toMatch(/pgmaintd/); // the lease taken for this very backup included
      // the target holds only what a pg-maintd running against it would have created
      const t = new pg.Pool({ connectionString: urlAs(ROLE, target), max: 1 });
      const silent = createLogger({ level: 'silent', format: 'json' });
      const leasePool = new DbPool(
        {
          url: urlAs(ROLE, target),
          ssl: { mode: 'disable', rejectUnauthorized: true },
          pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 },
        },
        { name: 'lease', logger: silent },
      );
      const lease = await asLeader(
        leasePool,
        'backup:x',
        { ttlMs: 3000, logger: silent },
        async () => 'leased',
      );
      await leasePool.stop();
      expect(lease.led).toBe(true);
      const u = new URL(urlAs(ROLE, target));
      u.password = '';
      const restore = spawnCli(['restore', '--latest', '--target-url', u.toString()], envFor(dir, {}, small));
      expect((await restore.exited).code, restore.output()).toBe(0);
      const n = await t.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
      expect(n.rows[0]!.n).toBe(5);
      await t.end();
    } finally {
      await admin(`DROP DATABASE IF EXISTS ${small} WITH (FORCE)`);
      await admin(`DROP DATABASE IF EXISTS ${target} WITH (FORCE)`);
    }
  });

  it('`maintenance run` while another pg-maintd holds the maintenance lease: exit 75, naming it; a dry run is not held up', async () => {
    const silent = createLogger({ level: 'silent', format: 'json' });
    const pool = new DbPool(
      {
        url: urlAs(ROLE),
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 },
      },
      { name: 'lease', logger: silent },
    );
    const dir = tempDir('pgmaintd-lease-maint-');
    try {
      const held = await asLeader(
        pool,
        `maintenance:${DATABASE}`,
        { ttlMs: 60_000, logger: silent },
        async () => {
          const refused = spawnCli(['maintenance', 'run'], envFor(dir));
          const code = (await refused.exited).code;
          const dry = spawnCli(['maintenance', 'run', '--dry-run'], envFor(dir));
          return { code, out: refused.output(), dry: (await dry.exited).code };
        },
      );
      expect(held.led).toBe(true);
      const r = (held as { value: { code: number | null; out: string; dry: number | null } }).value;
      expect(r.code, r.out).toBe(EXIT.TEMPFAIL);
      expect(r.out).toMatch(
        new RegExp(
          `pg-maintd: maintenance of ${DATABASE} not started: another pg-maintd holds its lease \\(\\S+ pid ${process.pid}, since `,
        ),
      );
      expect(r.dry).toBe(0);
    } finally {
      await pool.stop();
    }
  });
});
