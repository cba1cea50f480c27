// pg-maintd's own sessions set the timeouts they need, as pg_dump does: a statement_timeout (or a
// lock_timeout, an idle_in_transaction_session_timeout) set on the role or the database breaks no
// backup and no drill. What pg_dump warns about on success is kept, logged, counted and listed, and a
// drill that compared nothing says so instead of passing.
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { runVerification } from '../../src/backup/verify.js';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { backupDeps, metricValue } from '../support/backup.js';
import { cliEnv, runCli } from '../support/daemon.js';
import { adminUrl, createOwnedDatabase, withDatabase, type OwnedDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

let owned: OwnedDatabase;
const ROWS = 2_000_000; // counting them takes far longer than the role's 50 ms statement_timeout

beforeAll(async () => {
  owned = await createOwnedDatabase('t_inherited');
  await owned.admin(`CREATE TABLE public.big AS SELECT g AS id FROM generate_series(1, ${ROWS}) g;
    ALTER TABLE public.big OWNER TO ${owned.role}; ANALYZE public.big`);
  await owned.admin(`ALTER ROLE ${owned.role} SET statement_timeout = '50ms';
    ALTER ROLE ${owned.role} SET lock_timeout = '50ms';
    ALTER ROLE ${owned.role} SET idle_in_transaction_session_timeout = '300ms'`);
});
afterAll(async () => {
  await owned.admin('DROP SUBSCRIPTION IF EXISTS pgmaintd_test_sub').catch(() => undefined);
  await owned?.drop();
});

function envFor(dir: string, extra: Record<string, string> = {}) {
  return cliEnv(owned.url, dir, { LOG_LEVEL: 'info', ...extra });
}

describe('timeouts set on the role or the database', () => {
  it('break neither the backup (row counts in the snapshot) nor the drill (counts in the scratch database)', async () => {
    const dir = tempDir('pgmaintd-inherited-');
    const backup = await runCli(['backup'], envFor(dir));
    expect(backup.code, backup.out).toBe(0);
    const key = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(backup.out)![1]!;
    const manifest = JSON.parse(readFileSync(join(dir, `${key}.manifest.json`), 'utf8'));
    expect(manifest.rowCounts['public.big']).toEqual({ rows: ROWS, exact: true });
    const verify = await runCli(['verify'], envFor(dir));
    expect(verify.code, verify.out).toBe(0);
    expect(verify.out).toMatch(/^ok: .*: 1 tables compared$/m);
  });

  it('a count that fails all the same is the database failing, not pg_dump (which it took down)', async () => {
    // A pg_dump that is slow to start (a wrapper that waits 1 s, standing in for a loaded host): the
    // count in the snapshot's session fails first, which ends the exported snapshot, so pg_dump
    // would fail next with "invalid snapshot identifier". The cause is the count.
    const bin = tempDir('pgmaintd-slowdump-');
    const real = findServerBinaries(15).binDir;
    writeFileSync(join(bin, 'pg_dump'), `#!/bin/sh\nsleep 1\nexec ${real}/pg_dump "$@"\n`, { mode: 0o755 });
    for (const tool of ['psql', 'pg_restore']) symlinkSync(join(real, tool), join(bin, tool));
    const deps = await backupDeps({
      DATABASE_URL: owned.url,
      BACKUP_DATABASES: owned.name,
      PG_CLIENT_BIN_DIR: bin,
    });
    await owned.admin(
      `CREATE TABLE public.aaa_hidden (id int); REVOKE ALL ON public.aaa_hidden FROM ${owned.role}`,
    );
    try {
      const err = await runBackup(deps, owned.name).catch((e: unknown) => e);
      expect(err).toMatchObject({
        reason: 'database',
        message: expect.stringMatching(
          /^counting rows in the dump's snapshot failed: permission denied for table aaa_hidden/,
        ),
      });
      expect(
        await metricValue(deps.registry, 'pgmaintd_backup_failures_total', {
          database: owned.name,
          reason: 'pg_dump',
        }),
      ).toBe(0);
      expect((await deps.catalog.list(owned.name)).good).toEqual([]);
    } finally {
      await owned.admin('DROP TABLE public.aaa_hidden');
    }
  });
});

describe('a table another session holds locked exclusively', () => {
  it('fails the backup after BACKUP_LOCK_WAIT_TIMEOUT, saying why, instead of waiting for BACKUP_TIMEOUT', async () => {
    const deps = await backupDeps({
      DATABASE_URL: owned.url,
      BACKUP_DATABASES: owned.name,
      BACKUP_LOCK_WAIT_TIMEOUT: '2s',
    });
    // as the superuser: the role's own idle_in_transaction_session_timeout would end the holder
    const holder = new pg.Client({ connectionString: withDatabase(adminUrl(), owned.name) });
    await holder.connect();
    try {
      await holder.query('BEGIN; LOCK TABLE public.big IN ACCESS EXCLUSIVE MODE');
      const err = (await runBackup(deps, owned.name).catch((e: unknown) => e)) as Error;
      expect(err.message).toMatch(/lock timeout|could not obtain lock on relation "?big"?/);
      expect((await deps.catalog.list(owned.name)).good).toEqual([]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
  });
});

describe("another role's row-level security policy", () => {
  it("never runs with pg-maintd's privileges while the rows are counted", async () => {
    const role = `${owned.role}_m`;
    await owned.admin(`CREATE ROLE ${role} NOLOGIN; CREATE SCHEMA m AUTHORIZATION ${role}`);
    await owned.admin(`SET ROLE ${role};
      CREATE FUNCTION m.spy() RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'the policy ran as %', current_user; END$$;
      CREATE TABLE m.r (id int); INSERT INTO m.r VALUES (1);
      ALTER TABLE m.r ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON m.r USING (m.spy());
      GRANT USAGE ON SCHEMA m TO ${owned.role}; GRANT SELECT ON m.r TO ${owned.role}`);
    try {
      const deps = await backupDeps({ DATABASE_URL: owned.url, BACKUP_DATABASES: owned.name });
      const err = (await runBackup(deps, owned.name).catch((e: unknown) => e)) as Error;
      expect(err).toBeInstanceOf(Error); // as pg_dump would, the backup refuses a table it may not read whole
      expect(err.message).toMatch(/row-level security/);
      expect(err.message).not.toMatch(/the policy ran/);
    } finally {
      await owned.admin(`DROP SCHEMA m CASCADE; DROP ROLE ${role}`);
    }
  });
});

describe("pg_dump's warnings on a successful run", () => {
  it('are logged at warn, kept in the manifest, counted, and shown by `backups list`', async () => {
    // pg_dump run by a role that is not a superuser skips subscriptions and says so
    await owned.admin(`CREATE SUBSCRIPTION pgmaintd_test_sub CONNECTION 'host=127.0.0.1 port=1 dbname=none'
      PUBLICATION p WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE)`);
    const deps = await backupDeps({ DATABASE_URL: owned.url, BACKUP_DATABASES: owned.name });
    const manifest = await runBackup(deps, owned.name);
    expect(manifest.warnings).toEqual([
      'pg_dump: warning: subscriptions not dumped because current user is not a superuser',
    ]);
    expect(await metricValue(deps.registry, 'pgmaintd_backup_warnings_total', { database: owned.name })).toBe(
      1,
    );
    expect(await metricValue(deps.registry, 'pgmaintd_backup_last_warnings', { database: owned.name })).toBe(
      1,
    );

    const dir = tempDir('pgmaintd-warnings-');
    const backup = await runCli(['backup'], envFor(dir));
    expect(backup.code, backup.out).toBe(0);
    expect(backup.out).toMatch(/"level":40,.*"msg":"pg_dump succeeded with warnings/);
    expect(backup.out).toMatch(/1 pg_dump warning\(s\) in the log and manifest/);
    const list = await runCli(['backups', 'list'], envFor(dir, { LOG_LEVEL: 'warn' }));
    expect(list.out).toMatch(/1 pg_dump warning\(s\)/);
    expect(list.out).toContain('subscriptions not dumped because current user is not a superuser');
  });
});

describe('a drill that compared nothing', () => {
  it('is inconclusive, not ok: its own result, exit code, metric and reason', async () => {
    const deps = await backupDeps({
      DATABASE_URL: owned.url,
      BACKUP_DATABASES: owned.name,
      BACKUP_ROW_COUNT_MAX_TABLE_SIZE: '0', // every table gets an estimate, none an exact count
    });
    await runBackup(deps, owned.name);
    const record = await runVerification(deps, owned.name);
    expect(record).toMatchObject({ ok: false, result: 'inconclusive', tablesCompared: 0 });
    expect(record.reason).toMatch(
      /none of its \d+ table\(s\) has an exact row count .*BACKUP_ROW_COUNT_MAX_TABLE_SIZE/,
    );
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_verify_runs_total', {
        database: owned.name,
        result: 'inconclusive',
      }),
    ).toBe(1);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_verify_runs_total', {
        database: owned.name,
        result: 'success',
      }),
    ).toBe(0);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_verify_last_result', {
        database: owned.name,
        result: 'inconclusive',
      }),
    ).toBe(1);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_verify_last_success_timestamp_seconds', {
        database: owned.name,
      }),
    ).toBeUndefined();

    const verify = await runCli(['verify'], cliEnv(owned.url, deps.dir, { LOG_LEVEL: 'warn' }));
    expect(verify.code, verify.out).toBe(EXIT.FAILURE);
    expect(verify.out).toMatch(/^INCONCLUSIVE: .*: 0 tables compared: none of its/m);
  });
});
