/**
 * The cluster's globals end to end, on real servers with the real pg_dumpall and psql: a dump names
 * roles it does not hold, so a restore onto a fresh server fails until the globals are applied.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { runGlobalsBackup } from '../../src/backup/globals-backup.js';
import { listGlobals } from '../../src/backup/globals-catalog.js';
import { applyGlobalsRetention } from '../../src/backup/globals-retention.js';
import { restoreGlobals } from '../../src/backup/globals-restore.js';
import { restoreBackup } from '../../src/backup/restore.js';
import { runVerification } from '../../src/backup/verify.js';
import { backupJob } from '../../src/backup/jobs.js';
import { DbPool } from '../../src/db/pool.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { backupDeps, metricValue, readStored, type TestDeps } from '../support/backup.js';
import { sqlEach as sql, startPrivateCluster } from '../support/postgres.js';
import { immutableUnsupported, makeImmutable } from '../support/immutable.js';
import { tempDir } from '../support/temp.js';

describe('globals', () => {
  let source: LocalCluster;
  let fresh: LocalCluster;
  let deps: TestDeps;

  beforeAll(async () => {
    [source, fresh] = await Promise.all([startPrivateCluster(), startPrivateCluster()]);
    await sql(
      source.url(),
      `CREATE ROLE app_owner LOGIN CONNECTION LIMIT 10;
       CREATE ROLE app_reader NOLOGIN;
       CREATE ROLE "odd ""reader""" NOLOGIN;
       GRANT app_reader TO "odd ""reader""";
       ALTER ROLE app_reader SET work_mem TO '8MB';
       CREATE DATABASE appdb OWNER app_owner;`,
    );
    await sql(
      source.url('appdb'),
      `CREATE TABLE public.t (id int PRIMARY KEY, v text);
       INSERT INTO public.t SELECT g, 'row ' || g FROM generate_series(1, 100) g;
       ALTER TABLE public.t ENABLE ROW LEVEL SECURITY;
       CREATE POLICY readers ON public.t FOR SELECT TO app_reader, "odd ""reader""" USING (true);`,
    );
    deps = await backupDeps({ DATABASE_URL: source.url('appdb'), BACKUP_DATABASES: 'appdb' });
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled([source?.stop(), fresh?.stop()]);
  });

  const restoreTo = (db: string) =>
    restoreBackup({
      catalog: deps.catalog,
      logger: deps.logger,
      ssl: deps.config.db.ssl,
      clientBinDir: undefined,
      database: 'appdb',
      targetUrl: fresh.url(db),
    });
  const globalsTo = (key?: string) =>
    restoreGlobals({
      catalog: deps.catalog,
      logger: deps.logger,
      ssl: deps.config.db.ssl,
      clientBinDir: undefined,
      targetUrl: fresh.url(),
      key,
    });

  it('restores onto a fresh server only once the globals are applied; roles it has are left alone', async () => {
    // as a run does: the globals first, then the dumps
    const g = await runGlobalsBackup(deps);
    await runBackup(deps, 'appdb');
    expect(g.kind).toBe('globals');
    expect(g.passwords).toBe(false);
    expect(g.key).toMatch(/^globals\/\d{8}_\d{6}-[0-9a-f]{8}\.sql\.gz$/);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_globals_runs_total', { result: 'success' }),
    ).toBe(1);
    // the stored object is what pg_dumpall wrote, gzipped, as the manifest says
    const stored = await readStored(await deps.storage.getStream(g.key));
    expect(stored.sha256).toBe(g.sha256);
    expect(stored.text).toContain('CREATE ROLE app_reader;');
    expect(stored.text).not.toMatch(/PASSWORD '/);

    await sql(
      fresh.url(),
      'CREATE DATABASE target; CREATE ROLE keepme; CREATE ROLE app_owner LOGIN CONNECTION LIMIT 3',
    );
    // without the roles: a clear error that names the role and the fix
    await expect(restoreTo('target')).rejects.toThrow(/role "(app_reader|odd ""reader"")".*does not have/);
    await expect(restoreTo('target')).rejects.toMatchObject({
      hint: expect.stringMatching(/restore --globals/),
    });

    const r = await globalsTo();
    expect(r.created.sort()).toEqual(['app_reader', 'odd "reader"']);
    expect(r.existing.sort()).toEqual(['app_owner', 'postgres']);

    await restoreTo('target');
    const policy = await sql(
      fresh.url('target'),
      `SELECT array(SELECT rolname::text FROM pg_roles WHERE oid = ANY (polroles) ORDER BY 1) AS roles FROM pg_policy WHERE polname = 'readers'`,
    );
    expect(policy.rows[0].roles).toEqual(['app_reader', 'odd "reader"']);
    const roles = await sql(
      fresh.url(),
      `SELECT rolname, rolconnlimit, rolcanlogin,
              (SELECT array_agg(setconfig) FROM pg_db_role_setting s WHERE s.setrole = r.oid) AS settings,
              pg_has_role(r.oid, 'app_reader', 'MEMBER') AS member
         FROM pg_roles r WHERE rolname IN ('app_owner', 'app_reader', 'keepme', 'odd "reader"') ORDER BY 1`,
    );
    expect(roles.rows.map((x) => [x.rolname, x.rolconnlimit, x.member])).toEqual([
      ['app_owner', 3, false], // existing: not altered (its limit stays 3), given no membership
      ['app_reader', -1, true],
      ['keepme', -1, false], // not in the globals: never dropped
      ['odd "reader"', -1, true], // a new role gets its memberships
    ]);
    expect(String(roles.rows[1].settings)).toContain('work_mem=8MB');

    // a second run finds every role there and changes nothing
    const again = await globalsTo();
    expect(again.created).toEqual([]);
  }, 180_000);

  it("a drill on a server that lacks the backup's roles restores the globals there first", async () => {
    const drill = await startPrivateCluster();
    try {
      const drillDeps = await backupDeps({
        DATABASE_URL: source.url('appdb'),
        BACKUP_DATABASES: 'appdb',
        BACKUP_DIR: deps.dir,
        VERIFY_DATABASE_URL: drill.url(),
      });
      const record = await runVerification(drillDeps, 'appdb');
      expect(record.result).toBe('ok');
      expect(record.tablesCompared).toBe(1);
      const roles = await sql(drill.url(), `SELECT rolname FROM pg_roles WHERE rolname = 'app_reader'`);
      expect(roles.rowCount).toBe(1);
    } finally {
      await drill.stop();
    }
  }, 180_000);

  it.each([
    ['DROP ROLE', 'DROP ROLE keepme;'],
    ['COPY ... PROGRAM', "COPY (SELECT 1) TO PROGRAM 'touch /tmp/pgmaintd-pwned';"],
    [
      'an ALTER of an existing role riding on a CREATE',
      'CREATE ROLE x1; ALTER ROLE keepme WITH SUPERUSER IN ROLE pg_read_server_files;',
    ],
  ])('refuses hostile globals holding %s, and nothing of them runs', async (_, evil) => {
    const text = `SET standard_conforming_strings = on;\nCREATE ROLE hostile_marker;\n${evil}\n`;
    const body = gzipSync(text);
    const key = `globals/20200101_000000-${createHash('sha256').update(evil).digest('hex').slice(0, 8)}.sql.gz`;
    const good = (await listGlobals(deps.catalog)).good[0]!;
    await deps.storage.putStream(key, Readable.from([body]), { signal: new AbortController().signal });
    await deps.storage.putSmall(
      `${key}.manifest.json`,
      JSON.stringify({
        ...good.manifest,
        key,
        size: body.length,
        sha256: createHash('sha256').update(body).digest('hex'),
        startedAt: '2020-01-01T00:00:00Z',
        finishedAt: '2020-01-01T00:00:01Z',
      }),
    );
    await expect(globalsTo(key)).rejects.toThrow(/refused, nothing of them ran/);
    const left = await sql(
      fresh.url(),
      `SELECT rolname FROM pg_roles WHERE rolname IN ('keepme', 'hostile_marker')`,
    );
    expect(left.rows.map((x) => x.rolname)).toEqual(['keepme']);
  });

  it('keeps the globals of every stored dump, deletes the others past retention', async () => {
    // a second globals for the same backups, then a policy that keeps one: the globals the stored
    // dump needs (the newest taken before it) stay, and so does the newest one
    const before = (await listGlobals(deps.catalog)).good.filter((g) => !g.key.startsWith('globals/2020'));
    const later = await runGlobalsBackup(deps);
    const policy = {
      ...deps.config.retention,
      days: 0,
      minCount: 1,
      keepDaily: 0,
      keepWeekly: 0,
      keepMonthly: 0,
    };
    const plan = await applyGlobalsRetention(deps, ['appdb'], policy, {
      now: new Date(Date.now() + 86_400_000),
    });
    expect(plan.skipped).toBeUndefined();
    const keys = (await listGlobals(deps.catalog)).good.map((g) => g.key);
    expect(keys).toContain(later.key);
    expect(keys).toContain(before[0]!.key); // needed by the dump of the first test
    // the forged ones of 2020 are needed by no dump and old: deleted
    expect(keys.filter((k) => k.startsWith('globals/2020'))).toEqual([]);
  });

  it('a scheduled run stores the globals once for all its databases; a second replica of the tick skips them', async () => {
    await sql(source.url(), 'CREATE DATABASE otherdb');
    const jobDeps = await backupDeps({
      DATABASE_URL: source.url('appdb'),
      BACKUP_DATABASES: 'appdb,otherdb',
    });
    const lockPool = new DbPool(jobDeps.config.db, { name: 'lock', logger: jobDeps.logger, max: 2, min: 0 });
    try {
      const tick = new Date(Math.floor(Date.now() / 60_000) * 60_000);
      const run = async () => {
        const out: unknown[] = [];
        for await (const o of backupJob({ ...jobDeps, lockPool }).run(
          tick,
          new AbortController().signal,
        ) as AsyncIterable<unknown>)
          out.push(o);
        return out;
      };
      await run();
      const stored = (await listGlobals(jobDeps.catalog)).good;
      expect(stored).toHaveLength(1);
      expect(stored[0]!.manifest.tick).toBe(tick.toISOString());
      expect((await jobDeps.catalog.list('appdb')).good).toHaveLength(1);
      expect((await jobDeps.catalog.list('otherdb')).good).toHaveLength(1);
      await run(); // the same tick again (another replica): done already
      expect((await listGlobals(jobDeps.catalog)).good).toHaveLength(1);
    } finally {
      await lockPool.stop();
    }
  }, 180_000);

  it('a failed globals run is counted and keeps nothing', async () => {
    const broken = await backupDeps({
      DATABASE_URL: source.url('appdb'),
      BACKUP_DATABASES: 'appdb',
      PG_CLIENT_BIN_DIR: tempDir('pgmaintd-no-clients-'), // no pg_dumpall there
    });
    await expect(runGlobalsBackup(broken)).rejects.toThrow(/pg_dumpall/);
    expect(
      await metricValue(broken.registry, 'pgmaintd_backup_globals_failures_total', { reason: 'pg_dump' }),
    ).toBe(1);
    expect((await listGlobals(broken.catalog)).good).toEqual([]);
  });

  it('a drill on the cluster backed up never re-creates there a role dropped since the backup', async () => {
    await sql(
      source.url('appdb'),
      `CREATE ROLE gone_role LOGIN;
       CREATE TABLE public.t2 (id int);
       ALTER TABLE public.t2 ENABLE ROW LEVEL SECURITY;
       CREATE POLICY gone ON public.t2 FOR SELECT TO gone_role USING (true)`,
    );
    await runGlobalsBackup(deps);
    await runBackup(deps, 'appdb');
    // dropped on purpose (an account closed) after the backup that names it
    await sql(source.url('appdb'), 'DROP POLICY gone ON public.t2; DROP ROLE gone_role');
    // the drill's scratch database lives on the backed-up server itself (no VERIFY_DATABASE_URL)
    await runVerification(deps, 'appdb').catch((err: unknown) => err);
    const roles = await sql(source.url(), `SELECT rolname FROM pg_roles WHERE rolname = 'gone_role'`);
    expect(roles.rowCount).toBe(0);
  }, 180_000);

  it('globals retention retains what the store keeps locked (manifest first, a metric), never counting it removed', async (ctx) => {
    const unsupported = immutableUnsupported(deps.dir);
    if (unsupported) {
      console.log(`skipped: ${unsupported}`);
      ctx.skip();
    }
    // two globals after every dump: the older one is needed by none, the newer is the newest kept
    const older = await runGlobalsBackup(deps);
    await runGlobalsBackup(deps);
    const policy = {
      ...deps.config.retention,
      days: 0,
      minCount: 1,
      keepDaily: 0,
      keepWeekly: 0,
      keepMonthly: 0,
    };
    const unlock = makeImmutable(join(deps.dir, `${older.key}.manifest.json`));
    try {
      const plan = await applyGlobalsRetention(deps, ['appdb'], policy, {
        now: new Date(Date.now() + 86_400_000),
      });
      expect(plan.locked?.map((l) => l.key)).toEqual([`${older.key}.manifest.json`]);
      // kept whole: its data stays with the manifest that could not go, still restorable
      expect(existsSync(join(deps.dir, older.key))).toBe(true);
      expect((await listGlobals(deps.catalog)).good.map((g) => g.key)).toContain(older.key);
      expect(await metricValue(deps.registry, 'pgmaintd_backup_globals_retention_locked_objects', {})).toBe(
        1,
      );
    } finally {
      unlock();
    }
    const again = await applyGlobalsRetention(deps, ['appdb'], policy, {
      now: new Date(Date.now() + 86_400_000),
    });
    expect(again.locked).toEqual([]);
    expect(existsSync(join(deps.dir, older.key))).toBe(false);
    expect(await metricValue(deps.registry, 'pgmaintd_backup_globals_retention_locked_objects', {})).toBe(0);
  });
});
