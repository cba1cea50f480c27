/**
 * Dumps that keep their owners and GRANTs (BACKUP_OWNERSHIP=keep), restored onto a fresh cluster
 * that lacks the roles: without the globals the restore fails, names the role and leaves the target
 * empty; with them (`restore --globals`) owners, grants and rows are all there. The real CLI for the
 * plain format, the library calls it makes for the custom one; and the drill of each, as a role that
 * may only create databases.
 */
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { runGlobalsBackup } from '../../src/backup/globals-backup.js';
import { restoreGlobals } from '../../src/backup/globals-restore.js';
import { ownershipOf } from '../../src/backup/manifest.js';
import { MissingRoleError, restoreBackup } from '../../src/backup/restore.js';
import { runVerification } from '../../src/backup/verify.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { backupDeps, readStored, type TestDeps } from '../support/backup.js';
import { CLI } from '../support/daemon.js';
import { sqlEach as sql, startPrivateCluster } from '../support/postgres.js';

/** The built CLI, to its exit: code, stdout, stderr. */
function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: process.env.TMPDIR, ...env },
        timeout: 120_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

const SOURCE_SQL = `
  CREATE SCHEMA app AUTHORIZATION app_owner;
  CREATE TABLE app.t (id int PRIMARY KEY, v text);
  ALTER TABLE app.t OWNER TO app_owner;
  INSERT INTO app.t SELECT g, 'row ' || g FROM generate_series(1, 50) g;
  GRANT USAGE ON SCHEMA app TO app_reader;
  GRANT SELECT ON app.t TO app_reader;
  ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app GRANT SELECT ON TABLES TO app_reader`;

/** What of the backup's database a restore must bring back: owners, grants, default privileges, rows. */
const STATE_SQL = `
  SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 't') AS owner,
         (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'app') AS schema_owner,
         has_table_privilege('app_reader', 'app.t', 'SELECT') AS reader_select,
         has_table_privilege('app_reader', 'app.t', 'INSERT') AS reader_insert,
         has_schema_privilege('app_reader', 'app', 'USAGE') AS reader_usage,
         (SELECT count(*)::int FROM pg_default_acl WHERE defaclrole = 'app_owner'::regrole) AS default_acls,
         (SELECT count(*)::int FROM app.t) AS rows`;

/** Schemas and relations of the application in a target: none after a failed restore. */
const LEFT_SQL = `
  SELECT (SELECT count(*)::int FROM pg_namespace WHERE nspname = 'app') AS schemas,
         (SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%') AS relations`;

describe('dumps that keep owners and grants', () => {
  let source: LocalCluster;
  let fresh: LocalCluster;
  let plain: TestDeps;
  let custom: TestDeps;
  /** The CLI's settings for the plain store; the target's password in PGPASSWORD, never the URL. */
  let plainEnv: Record<string, string>;

  beforeAll(async () => {
    [source, fresh] = await Promise.all([startPrivateCluster(), startPrivateCluster()]);
    await sql(
      source.url(),
      `CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_reader NOLOGIN; CREATE DATABASE appdb`,
    );
    await sql(source.url('appdb'), SOURCE_SQL);
    const env = { DATABASE_URL: source.url('appdb'), BACKUP_DATABASES: 'appdb' };
    plain = await backupDeps({ ...env, BACKUP_FORMAT: 'plain' });
    custom = await backupDeps({ ...env, BACKUP_FORMAT: 'custom' });
    // as a scheduled run does: the globals, then the dump
    for (const deps of [plain, custom]) {
      await runGlobalsBackup(deps);
      await runBackup(deps, 'appdb');
    }
    plainEnv = {
      ...env,
      BACKUP_DIR: plain.dir,
      DB_SSL_MODE: 'disable',
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'warn',
      MIGRATE_ON_START: 'false',
      PGPASSWORD: fresh.password,
    };
    await sql(
      fresh.url(),
      'CREATE DATABASE plain_target; CREATE DATABASE custom_target; CREATE DATABASE bare_target',
    );
  }, 180_000);
  afterAll(async () => {
    await Promise.allSettled([source?.stop(), fresh?.stop()]);
  });

  it('keeps owners and grants by default, and says so in the manifest', async () => {
    const [p] = (await plain.catalog.list('appdb')).good;
    const [c] = (await custom.catalog.list('appdb')).good;
    expect(plain.config.backup.ownership).toBe('keep');
    expect(ownershipOf(p!.manifest)).toBe('keep');
    expect(ownershipOf(c!.manifest)).toBe('keep');
    const text = (await readStored(await plain.storage.getStream(p!.key))).text;
    expect(text).toContain('ALTER TABLE app.t OWNER TO app_owner;');
    expect(text).toContain('GRANT SELECT ON TABLE app.t TO app_reader;');
  });

  it('custom format: fails naming the role and --globals, leaves the target empty; --no-owner restores without them', async () => {
    const restore = (db: string, noOwner = false) =>
      restoreBackup({
        catalog: custom.catalog,
        logger: custom.logger,
        ssl: custom.config.db.ssl,
        clientBinDir: undefined,
        database: 'appdb',
        targetUrl: fresh.url(db),
        noOwner,
      });
    const err = await restore('custom_target').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingRoleError);
    expect((err as MissingRoleError).role).toBe('app_owner'); // ALTER SCHEMA app OWNER TO app_owner
    expect((err as MissingRoleError).message).toMatch(/does not have: nothing was restored/);
    expect((err as MissingRoleError).hint).toMatch(/restore --globals/);
    expect((await sql(fresh.url('custom_target'), LEFT_SQL)).rows[0]).toEqual({ schemas: 0, relations: 0 });

    // without owners: everything is the restoring role's, the rows are there
    await restore('bare_target', true);
    const bare = await sql(
      fresh.url('bare_target'),
      `SELECT tableowner, (SELECT count(*)::int FROM app.t) AS rows FROM pg_tables WHERE schemaname = 'app'`,
    );
    expect(bare.rows).toEqual([{ tableowner: 'postgres', rows: 50 }]);
  }, 120_000);

  it('plain format through the CLI: refuses --no-owner, fails without the globals, restores owners and grants with --globals', async () => {
    const target = fresh.url('plain_target', fresh.user, null);
    const refused = await cli(['restore', '--latest', '--no-owner', '--target-url', target], plainEnv);
    expect(refused.code).toBe(64);
    expect(refused.stderr).toMatch(/plain SQL dump that holds its owners/);
    expect(refused.stderr).toMatch(/BACKUP_FORMAT=custom/);

    const failed = await cli(['restore', '--latest', '--target-url', target], plainEnv);
    expect(failed.code).toBe(65);
    expect(failed.stderr).toMatch(/role "app_owner", which the target's server does not have/);
    expect(failed.stderr).toMatch(/restore --globals/);
    expect((await sql(fresh.url('plain_target'), LEFT_SQL)).rows[0]).toEqual({ schemas: 0, relations: 0 });

    // the owner there, the grantee not: the GRANT is what fails, in either format, and nothing stays
    await sql(fresh.url(), 'CREATE ROLE app_owner NOLOGIN');
    const grant = await cli(['restore', '--latest', '--target-url', target], plainEnv);
    expect(grant.code).toBe(65);
    expect(grant.stderr).toMatch(/role "app_reader", which the target's server does not have/);
    expect((await sql(fresh.url('plain_target'), LEFT_SQL)).rows[0]).toEqual({ schemas: 0, relations: 0 });
    const customGrant = await restoreBackup({
      catalog: custom.catalog,
      logger: custom.logger,
      ssl: custom.config.db.ssl,
      clientBinDir: undefined,
      database: 'appdb',
      targetUrl: fresh.url('custom_target'),
    }).catch((e: unknown) => e);
    expect(customGrant).toBeInstanceOf(MissingRoleError);
    expect((customGrant as MissingRoleError).role).toBe('app_reader');
    expect((await sql(fresh.url('custom_target'), LEFT_SQL)).rows[0]).toEqual({ schemas: 0, relations: 0 });

    const done = await cli(['restore', '--globals', '--latest', '--target-url', target], plainEnv);
    expect(done.stderr).toBe('');
    expect(done.code).toBe(0);
    expect(done.stdout).toMatch(/1 roles created, 2 already there/); // app_reader; app_owner, postgres
    expect(done.stdout).toMatch(/restored appdb\//);
    expect((await sql(fresh.url('plain_target'), STATE_SQL)).rows[0]).toEqual({
      owner: 'app_owner',
      schema_owner: 'app_owner',
      reader_select: true,
      reader_insert: false,
      reader_usage: true,
      default_acls: 1,
      rows: 50,
    });
  }, 180_000);

  it('custom format: with the roles there, restores owners and grants', async () => {
    // the previous test's --globals created them on this server; a second apply changes nothing
    const g = await restoreGlobals({
      catalog: custom.catalog,
      logger: custom.logger,
      ssl: custom.config.db.ssl,
      clientBinDir: undefined,
      targetUrl: fresh.url(),
    });
    expect(g.existing).toEqual(expect.arrayContaining(['app_owner', 'app_reader']));
    await restoreBackup({
      catalog: custom.catalog,
      logger: custom.logger,
      ssl: custom.config.db.ssl,
      clientBinDir: undefined,
      database: 'appdb',
      targetUrl: fresh.url('custom_target'),
    });
    expect((await sql(fresh.url('custom_target'), STATE_SQL)).rows[0]).toMatchObject({
      owner: 'app_owner',
      schema_owner: 'app_owner',
      reader_select: true,
      reader_usage: true,
      default_acls: 1,
      rows: 50,
    });
  }, 120_000);

  it('drills as a role that may only create databases: custom restores without owners, plain says why it cannot', async () => {
    await sql(fresh.url(), `CREATE ROLE drill LOGIN CREATEDB PASSWORD 'drill-pw'`);
    const drillUrl = fresh.url('postgres', 'drill', 'drill-pw');
    const drillDeps = async (deps: TestDeps, format: string) =>
      backupDeps({
        DATABASE_URL: source.url('appdb'),
        BACKUP_DATABASES: 'appdb',
        BACKUP_DIR: deps.dir,
        BACKUP_FORMAT: format,
        VERIFY_DATABASE_URL: drillUrl,
      });
    const ok = await runVerification(await drillDeps(custom, 'custom'), 'appdb');
    expect(ok).toMatchObject({ result: 'ok', ok: true, tablesCompared: 1 });

    const plainDrill = await runVerification(await drillDeps(plain, 'plain'), 'appdb');
    expect(plainDrill).toMatchObject({ result: 'inconclusive', ok: false, tablesCompared: 0 });
    expect(plainDrill.reason).toMatch(/may not act as it/);
    expect(plainDrill.reason).toMatch(/BACKUP_FORMAT=custom/);
    // neither left a scratch database behind
    const left = await sql(
      fresh.url(),
      `SELECT datname FROM pg_database WHERE datname LIKE 'pgmaintd_verify_%'`,
    );
    expect(left.rowCount).toBe(0);
  }, 180_000);
});
