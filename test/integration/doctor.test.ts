// pg-maintd doctor against real clusters: one with the settings the seed's troubleshooting section
// needs turned off, one healthy, and PostgreSQL 13 and 17 for the version branches. Roles are real:
// a non-superuser without pg_monitor, one with GRANT ALTER SYSTEM ON PARAMETER, and the superuser.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolMajor } from '../../src/programs/client-tools.js';
import { loadConfig } from '../../src/config/load.js';
import { runDoctor, type DoctorReport } from '../../src/doctor/doctor.js';
import type { Finding } from '../../src/doctor/finding.js';
import { renderJson, renderText } from '../../src/doctor/report.js';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import { freePort } from '../../src/core/free-port.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { OperatorError } from '../../src/core/errors.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { createLogger } from '../../src/log/logger.js';
import { noDefaults } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { makeTestPki, type TestPki } from '../support/tls.js';

const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent', format: 'json' });
const LOW = 'doctor_low';
const LOW_PASSWORD = 'low-password-1';

function doctor(url: string, opts: { apply?: boolean; env?: Record<string, string> } = {}) {
  const { config } = loadConfig({
    env: { DATABASE_URL: url, DB_SSL_MODE: 'disable', DB_POOL_MAX: '5', ...opts.env },
    defaultsDir: noDefaults(),
  });
  return runDoctor({ config, logger, apply: opts.apply === true });
}

function finding(r: DoctorReport, id: string): Finding {
  const f = r.findings.find((x) => x.id === id);
  if (!f) throw new Error(`no finding ${id} in ${r.findings.map((x) => x.id).join(', ')}`);
  return f;
}

/** Runs each statement on its own (ALTER SYSTEM cannot share a multi-statement string); the last one's rows. */
async function sql<R extends pg.QueryResultRow>(url: string, ...statements: string[]): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    let rows: R[] = [];
    for (const text of statements) rows = (await c.query<R>(text)).rows;
    return rows;
  } finally {
    await c.end();
  }
}

/** SHOW on a fresh session, so the value is the server's after any reload. */
async function show(url: string, name: string): Promise<string> {
  const rows = await sql<Record<string, string>>(url, `SHOW ${name}`);
  return rows[0]![name]!;
}

async function autoConf(url: string): Promise<string[]> {
  const rows = await sql<{ name: string }>(
    url,
    "SELECT name FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY name",
  );
  return rows.map((r) => r.name);
}

describe('a cluster with the troubleshooting settings off', () => {
  let cluster: LocalCluster;
  let admin: string;
  let low: string;
  beforeAll(async () => {
    cluster = await startPrivateCluster({
      settings: {
        shared_preload_libraries: "''",
        track_io_timing: 'off',
        log_min_duration_statement: -1,
        autovacuum: 'off',
        max_connections: 20,
      },
    });
    await sql(cluster.url(), 'CREATE DATABASE app');
    admin = cluster.url('app');
    low = cluster.url('app', LOW, LOW_PASSWORD);
    await sql(
      admin,
      `CREATE ROLE ${LOW} LOGIN PASSWORD '${LOW_PASSWORD}' CONNECTION LIMIT 5;
       CREATE TABLE projects (id int); ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
       GRANT SELECT ON projects TO ${LOW};
       CREATE TABLE secrets (id int);`,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('reports each finding with its fix to a non-superuser without pg_monitor, and fails', async () => {
    const r = await doctor(low);
    const byId = (id: string) => finding(r, id);

    expect(byId('pg_stat_statements.preloaded')).toMatchObject({
      status: 'warn',
      found: expect.stringContaining('not loaded'),
      fix: { restart: true },
    });
    // without pg_read_all_settings the list is unreadable: the fix says to keep what is there
    expect(byId('pg_stat_statements.preloaded').found).toContain('not readable');
    expect(byId('pg_stat_statements.preloaded').fix!.sql).toEqual([
      "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';",
    ]);
    expect(byId('pg_stat_statements.installed')).toMatchObject({
      status: 'warn',
      found: expect.stringMatching(/not installed/),
    });
    expect(byId('pg_stat_statements.installed').fix!.remedies).toBeUndefined(); // not before it is preloaded

    expect(byId('settings.log_min_duration_statement')).toMatchObject({
      status: 'warn',
      found: '-1 (off) (from postgresql.conf or postgresql.auto.conf)',
      fix: { sql: ["ALTER SYSTEM SET log_min_duration_statement = '1s';", 'SELECT pg_reload_conf();'] },
    });
    expect(byId('settings.track_io_timing')).toMatchObject({
      status: 'warn',
      fix: { sql: ["ALTER SYSTEM SET track_io_timing = 'on';", 'SELECT pg_reload_conf();'] },
    });
    expect(byId('settings.autovacuum')).toMatchObject({
      status: 'fail',
      found: expect.stringMatching(/^off/),
    });
    expect(byId('settings.track_counts').status).toBe('ok');

    expect(byId('role.superuser')).toMatchObject({ status: 'ok', found: `${LOW} is not a superuser` });
    expect(byId('role.monitoring')).toMatchObject({
      status: 'warn',
      fix: { sql: [`GRANT pg_monitor TO ${LOW};`] },
    });
    expect(byId('role.createdb')).toMatchObject({
      status: 'fail',
      fix: { sql: [`ALTER ROLE ${LOW} CREATEDB;`] },
    });
    expect(byId('role.connect').status).toBe('ok');
    const read = byId('role.backup_read');
    expect(read.status).toBe('fail');
    expect(read.found).toContain('without SELECT: public.secrets');
    expect(read.found).toContain(`row-level security applies to ${LOW} on public.projects`);
    expect(read.fix!.sql).toEqual([`GRANT pg_read_all_data TO ${LOW};`, `ALTER ROLE ${LOW} BYPASSRLS;`]);

    // DB_POOL_MAX 5: up to 15 connections, above the role's CONNECTION LIMIT 5
    expect(byId('connections.pool')).toMatchObject({
      status: 'fail',
      fix: { sql: [`ALTER ROLE ${LOW} CONNECTION LIMIT 15;`] },
    });
    expect(byId('connections.headroom').status).toBe('ok');
    expect(byId('client.pg_dump').status).toBe('ok');

    for (const f of r.findings) {
      expect(f.why.length, f.id).toBeGreaterThan(20);
      if (f.status === 'warn' || f.status === 'fail')
        expect((f.fix?.sql?.length ?? 0) + (f.fix?.steps?.length ?? 0), f.id).toBeGreaterThan(0);
    }
    expect(r.exitCode).toBe(EXIT.FAILURE);

    const text = renderText(r);
    expect(text).toContain(`role ${LOW}`);
    expect(text).toMatch(/WARN\s+settings\.track_io_timing\s+off/);
    expect(text).toContain("fix: ALTER SYSTEM SET track_io_timing = 'on';");
    expect(text).toMatch(/FAIL\s+settings\.autovacuum/);
    expect(text).toMatch(/failed, \d+ warnings, \d+ ok, \d+ info: exit 1\n$/);
    const json = JSON.parse(renderJson(r)) as { exitCode: number; findings: Array<{ id: string }> };
    expect(json.exitCode).toBe(1);
    expect(json.findings.map((f) => f.id)).toContain('settings.autovacuum');
  });

  it('--apply as a non-superuser without the privilege names what is missing and changes nothing', async () => {
    const r = await doctor(low, { apply: true });
    const a = r.apply!;
    expect(a.applied).toEqual([]);
    expect(a.reloaded).toBe(false);
    const ids = a.notAllowed.map((x) => x.id).sort();
    expect(ids).toEqual([
      'settings.autovacuum',
      'settings.log_lock_waits',
      'settings.log_min_duration_statement',
      'settings.track_io_timing',
    ]);
    const tio = a.notAllowed.find((x) => x.id === 'settings.track_io_timing')!;
    expect(tio.missing).toBe('ALTER SYSTEM on parameter track_io_timing and EXECUTE on pg_reload_conf()');
    expect(tio.sql).toEqual(["ALTER SYSTEM SET track_io_timing = 'on';", 'SELECT pg_reload_conf();']);
    expect(tio.grants).toEqual([
      `GRANT ALTER SYSTEM ON PARAMETER track_io_timing TO ${LOW};`,
      `GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO ${LOW};`,
    ]);
    expect(a.manual.map((m) => m.id)).toContain('pg_stat_statements.preloaded');
    expect(a.changes).toEqual([]);

    const text = renderText(r);
    expect(text).toContain(`not allowed  settings.track_io_timing: ${LOW} lacks ALTER SYSTEM on parameter`);
    expect(text).toContain('nothing of the above was changed. SQL for a DBA (as a superuser):');
    expect(text).toContain(`GRANT ALTER SYSTEM ON PARAMETER log_min_duration_statement TO ${LOW};`);

    expect(await autoConf(admin)).toEqual([]);
    expect(await show(admin, 'track_io_timing')).toBe('off');
    expect(await show(admin, 'autovacuum')).toBe('off');
  });

  it('--apply by a role granted ALTER SYSTEM on one parameter (PostgreSQL 15+) applies just that one', async () => {
    await sql(
      admin,
      `GRANT ALTER SYSTEM ON PARAMETER track_io_timing TO ${LOW};
       GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO ${LOW}`,
    );
    try {
      const r = await doctor(low, { apply: true });
      expect(r.apply!.applied).toEqual([
        { id: 'settings.track_io_timing', sql: "ALTER SYSTEM SET track_io_timing = 'on';" },
      ]);
      expect(r.apply!.reloaded).toBe(true);
      expect(r.apply!.notAllowed.find((x) => x.id === 'settings.autovacuum')!.missing).toBe(
        'ALTER SYSTEM on parameter autovacuum',
      );
      expect(r.apply!.changes).toEqual([
        {
          id: 'settings.track_io_timing',
          before: { status: 'warn', found: 'off (from postgresql.conf or postgresql.auto.conf)' },
          after: { status: 'ok', found: 'on (from postgresql.conf or postgresql.auto.conf)' },
        },
      ]);
      expect(finding(r, 'settings.track_io_timing').status).toBe('ok');
      expect(await show(admin, 'track_io_timing')).toBe('on');
    } finally {
      await sql(
        admin,
        'ALTER SYSTEM RESET track_io_timing',
        'SELECT pg_reload_conf()',
        `REVOKE ALTER SYSTEM ON PARAMETER track_io_timing FROM ${LOW}`,
        `REVOKE EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() FROM ${LOW}`,
      );
    }
  });

  it('--apply as a superuser fixes the safe settings, reloads, and leaves shared_preload_libraries as a manual step', async () => {
    const r = await doctor(admin, { apply: true });
    const a = r.apply!;
    expect(a.applied.map((x) => x.sql).sort()).toEqual([
      "ALTER SYSTEM SET autovacuum = 'on';",
      "ALTER SYSTEM SET log_lock_waits = 'on';",
      "ALTER SYSTEM SET log_min_duration_statement = '1s';",
      "ALTER SYSTEM SET track_io_timing = 'on';",
    ]);
    expect(a.reloaded).toBe(true);
    expect(a.notAllowed).toEqual([]);
    expect(a.failed).toEqual([]);
    const preload = a.manual.find((m) => m.id === 'pg_stat_statements.preloaded')!;
    expect(preload).toMatchObject({
      restart: true,
      sql: ["ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';"],
    });
    // idle_in_transaction_session_timeout ends sessions: printed, never applied
    expect(a.manual.map((m) => m.id)).toContain('settings.idle_in_transaction_session_timeout');

    expect(await show(admin, 'track_io_timing')).toBe('on');
    expect(await show(admin, 'log_min_duration_statement')).toBe('1s');
    expect(await show(admin, 'autovacuum')).toBe('on');
    expect(await show(admin, 'log_lock_waits')).toBe('on');
    expect(await show(admin, 'shared_preload_libraries')).toBe('');
    expect(await autoConf(admin)).toEqual([
      'autovacuum',
      'log_lock_waits',
      'log_min_duration_statement',
      'track_io_timing',
    ]);

    const changed = Object.fromEntries(
      a.changes.map((c) => [c.id, `${c.before.status} -> ${c.after.status}`]),
    );
    expect(changed).toMatchObject({
      'settings.autovacuum': 'fail -> ok',
      'settings.track_io_timing': 'warn -> ok',
      'settings.log_min_duration_statement': 'warn -> ok',
    });
    expect(finding(r, 'settings.log_min_duration_statement').found).toMatch(/^1s/);
    expect(finding(r, 'pg_stat_statements.preloaded').status).toBe('warn');
    expect(finding(r, 'role.superuser').status).toBe('warn'); // least privilege
    expect(finding(r, 'settings.pending_restart')).toMatchObject({ status: 'ok', found: 'none' });
    expect(r.exitCode).toBe(EXIT.OK);

    const text = renderText(r);
    expect(text).toContain("applied      ALTER SYSTEM SET track_io_timing = 'on';");
    expect(text).toMatch(/settings\.autovacuum\s+FAIL off .* -> {2}ok on/);
    expect(text).toContain('pg_stat_statements.preloaded (needs a restart):');
  });

  it('reports a setting that waits for a restart', async () => {
    await sql(
      admin,
      "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
      'SELECT pg_reload_conf()',
    );
    try {
      // the postmaster marks it once it has re-read the file, a moment after pg_reload_conf()
      const f = await waitFor(
        async () => finding(await doctor(admin), 'settings.pending_restart'),
        (x) => x.status !== 'ok',
        15_000,
      );
      expect(f).toMatchObject({ status: 'warn', found: 'shared_preload_libraries', fix: { restart: true } });
    } finally {
      await sql(admin, 'ALTER SYSTEM RESET shared_preload_libraries', 'SELECT pg_reload_conf()');
    }
  });

  it('judges connection headroom against max_connections - superuser_reserved_connections', async () => {
    const max = Number(await show(admin, 'max_connections'));
    const reserved = Number(await show(admin, 'superuser_reserved_connections'));
    const limit = max - reserved;
    const holders: pg.Client[] = [];
    const hold = async (n: number) => {
      while (holders.length < n) {
        const c = new pg.Client({ connectionString: admin });
        await c.connect();
        holders.push(c);
      }
    };
    try {
      await hold(Math.ceil(limit * 0.85));
      let r = await doctor(admin, { env: { DB_POOL_MAX: String(limit) } });
      expect(finding(r, 'connections.headroom')).toMatchObject({
        status: 'warn',
        found: expect.stringMatching(new RegExp(`^${holders.length} of ${limit} connections in use`)),
      });
      expect(finding(r, 'connections.pool')).toMatchObject({
        status: 'fail',
        found: expect.stringContaining(`more than the ${limit} slots the server has for non-superusers`),
      });
      await hold(limit);
      r = await doctor(admin);
      expect(finding(r, 'connections.headroom').status).toBe('fail');
      expect(finding(r, 'connections.headroom').fix!.sql![0]).toContain('FROM pg_stat_activity');
      expect(r.exitCode).toBe(EXIT.FAILURE);
    } finally {
      await Promise.all(holders.map((c) => c.end()));
    }
  });
});

describe('a healthy cluster', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({
      settings: { log_min_duration_statement: "'1s'", log_lock_waits: 'on' },
    });
    await sql(
      cluster.url(),
      `CREATE ROLE ${LOW} LOGIN PASSWORD '${LOW_PASSWORD}' CREATEDB; GRANT pg_monitor TO ${LOW}`,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('counts METRICS_MAX_CONNECTIONS for the metrics, however many databases they poll', async () => {
    await sql(cluster.url(), 'CREATE DATABASE metrics_one', 'CREATE DATABASE metrics_two');
    try {
      const all = finding(
        await doctor(cluster.url(), { env: { METRICS_DATABASES: '*' } }),
        'connections.pool',
      );
      // DB_POOL_MAX 5 + readiness 1 + metrics 3 + backup 3 + drill 3
      expect(all.found).toMatch(/^pg-maintd opens up to 15 connections \(.*METRICS_MAX_CONNECTIONS 3/);
      const more = finding(
        await doctor(cluster.url(), { env: { METRICS_DATABASES: '*', METRICS_MAX_CONNECTIONS: '10' } }),
        'connections.pool',
      );
      expect(more.found).toMatch(/^pg-maintd opens up to 22 connections \(.*METRICS_MAX_CONNECTIONS 10/);
    } finally {
      await sql(cluster.url(), 'DROP DATABASE metrics_one', 'DROP DATABASE metrics_two');
    }
  });

  it('--apply as a non-superuser cannot create pg_stat_statements (not a trusted extension)', async () => {
    const r = await doctor(cluster.url('postgres', LOW, LOW_PASSWORD), { apply: true });
    expect(r.apply!.applied).toEqual([]);
    expect(r.apply!.notAllowed).toEqual([
      {
        id: 'pg_stat_statements.installed',
        sql: ['CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;'],
        missing:
          'superuser: pg_stat_statements is not a trusted extension, so only a superuser can create it',
        grants: [],
      },
    ]);
    expect(
      await sql(cluster.url(), "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"),
    ).toEqual([]);
  });

  it('--apply as a superuser creates pg_stat_statements once it is preloaded', async () => {
    const r = await doctor(cluster.url(), { apply: true });
    expect(r.apply!.applied).toEqual([
      {
        id: 'pg_stat_statements.installed',
        sql: 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;',
      },
    ]);
    expect(r.apply!.changes.find((c) => c.id === 'pg_stat_statements.installed')).toMatchObject({
      before: { status: 'warn' },
      after: { status: 'ok' },
    });
    expect(await sql(cluster.url(), 'SELECT count(*) FROM pg_stat_statements')).toHaveLength(1);
  });

  it('reports ok for every settings check, to a least-privilege role with pg_monitor and CREATEDB', async () => {
    const r = await doctor(cluster.url('postgres', LOW, LOW_PASSWORD));
    for (const id of [
      'server.version',
      'pg_stat_statements.preloaded',
      'pg_stat_statements.installed',
      'settings.log_min_duration_statement',
      'settings.track_io_timing',
      'settings.autovacuum',
      'settings.track_counts',
      'settings.pending_restart',
      'connections.headroom',
      'connections.pool',
      'connections.tls',
      'role.superuser',
      'role.monitoring',
      'role.connect',
      'role.createdb',
      'role.backup_read',
      'role.statement_timeout',
      'client.pg_dump',
    ])
      expect(finding(r, id).status, `${id}: ${finding(r, id).found}`).toBe('ok');
    expect(finding(r, 'settings.log_min_duration_statement').found).toBe(
      '1s (from postgresql.conf or postgresql.auto.conf)',
    );
    expect(finding(r, 'pg_stat_statements.preloaded').found).toContain("'pg_stat_statements'");
    expect(finding(r, 'role.monitoring').found).toBe('member of pg_monitor');
    expect(r.exitCode).toBe(EXIT.OK);
  });

  it('warns while drills restore as the role of DATABASE_URL, and names a role of their own as the fix', async () => {
    const r = await doctor(cluster.url('postgres', LOW, LOW_PASSWORD));
    expect(finding(r, 'role.drill_isolation')).toMatchObject({
      status: 'warn',
      found: `drills restore as ${LOW}, the role of DATABASE_URL`,
      fix: { sql: ['CREATE ROLE pgmaintd_drill LOGIN CREATEDB;'] },
    });
    const isolated = await doctor(cluster.url('postgres', LOW, LOW_PASSWORD), {
      env: { VERIFY_DATABASE_URL: cluster.url('postgres', 'pgmaintd_drill', null) },
    });
    expect(finding(isolated, 'role.drill_isolation').status).toBe('ok');
  });

  it('sees the preload without pg_read_all_settings, and reports a role statement_timeout', async () => {
    await sql(
      cluster.url(),
      `CREATE ROLE bare LOGIN PASSWORD 'bare-password' CREATEDB; ALTER ROLE bare SET statement_timeout = '20s'`,
    );
    const r = await doctor(cluster.url('postgres', 'bare', 'bare-password'));
    expect(finding(r, 'pg_stat_statements.preloaded')).toMatchObject({
      status: 'ok',
      found: 'loaded (shared_preload_libraries = (not readable without pg_read_all_settings))',
    });
    expect(finding(r, 'role.statement_timeout')).toMatchObject({
      status: 'info',
      found: '20s (from ALTER ROLE ... SET)',
      fix: { sql: ['ALTER ROLE bare SET statement_timeout = 0;'] },
    });
  });

  it('exits 69 with a clear message when the database is unreachable', async () => {
    const port = await freePort();
    const err = await doctor(`postgresql://postgres:pw@127.0.0.1:${port}/postgres`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OperatorError);
    expect((err as OperatorError).exitCode).toBe(EXIT.UNAVAILABLE);
    expect((err as OperatorError).describe()).toBe(
      `cannot use the database at postgres@127.0.0.1:${port}/postgres: connect ECONNREFUSED 127.0.0.1:${port}\n` +
        '  fix: is PostgreSQL running and listening there? Check the host and port in DATABASE_URL',
    );
  });
});

// The version branches: no GRANT ALTER SYSTEM before 15, reserved_connections from 16, pg_read_all_data
// from 14, and a pg_dump (the local 15) older than the server.
describe.each([13, 17])('PostgreSQL %i', (major) => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({
      binaries: findServerBinaries(major),
      settings: { track_io_timing: 'off' },
    });
    await sql(
      cluster.url(),
      `CREATE ROLE ${LOW} LOGIN PASSWORD '${LOW_PASSWORD}'; CREATE TABLE secrets (id int);
       CREATE EXTENSION pg_stat_statements`,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('runs every check, and --apply as a non-superuser says what this version needs', async () => {
    const r = await doctor(cluster.url('postgres', LOW, LOW_PASSWORD), { apply: true });
    const errored = r.findings.filter((f) => f.found.startsWith('error:'));
    expect(errored).toEqual([]);
    expect(finding(r, 'server.version')).toMatchObject({
      status: 'ok',
      found: expect.stringContaining(`${major}.`),
    });
    expect(finding(r, 'pg_stat_statements.installed').status).toBe('ok');
    expect(finding(r, 'pg_stat_statements.preloaded').status).toBe('ok');
    const headroom = finding(r, 'connections.headroom');
    expect(headroom.found.includes('reserved_connections 0')).toBe(major >= 16);
    const tio = r.apply!.notAllowed.find((x) => x.id === 'settings.track_io_timing')!;
    const read = finding(r, 'role.backup_read');
    if (major < 15) {
      expect(tio.missing).toMatch(/^superuser: before PostgreSQL 15 only a superuser can run ALTER SYSTEM/);
      expect(tio.grants).toEqual([]);
      expect(read.fix!.sql).toContain(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${LOW};`);
    } else {
      expect(tio.grants).toContain(`GRANT ALTER SYSTEM ON PARAMETER track_io_timing TO ${LOW};`);
      expect(read.fix!.sql).toEqual([`GRANT pg_read_all_data TO ${LOW};`]);
    }
    // pg_dump (the local client, 15 here) must be at least the server's major
    const dump = await toolMajor('pg_dump', undefined);
    expect(finding(r, 'client.pg_dump')).toMatchObject({
      status: dump.major >= major ? 'ok' : 'fail',
      found: `pg_dump ${dump.version}, server ${major}`,
    });
    expect(await show(cluster.url(), 'track_io_timing')).toBe('off');
  });
});

describe('TLS to the database', () => {
  let cluster: LocalCluster;
  let pki: TestPki;
  beforeAll(async () => {
    pki = makeTestPki();
    cluster = await startPrivateCluster({
      files: { 'server.crt': pki.serverCert, 'server.key': pki.serverKey },
      settings: { ssl: 'on', ssl_cert_file: "'server.crt'", ssl_key_file: "'server.key'" },
    });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('warns about an unverified server, and is content with verify-full', async () => {
    const url = cluster.url().replace('127.0.0.1', 'localhost');
    const unverified = await doctor(url, { env: { DB_SSL_MODE: 'require' } });
    expect(finding(unverified, 'connections.tls')).toMatchObject({
      status: 'warn',
      found: expect.stringMatching(/^TLSv1\.[23], server not verified \(DB_SSL_MODE=require\)$/),
      fix: { steps: [expect.stringContaining('DB_SSL_MODE=verify-full')] },
    });
    const verified = await doctor(url, { env: { DB_SSL_MODE: 'verify-full', DB_SSL_ROOT_CERT: pki.caFile } });
    expect(finding(verified, 'connections.tls')).toMatchObject({
      status: 'ok',
      found: expect.stringContaining('certificate verified (DB_SSL_MODE=verify-full)'),
    });
    const plain = await doctor(url, { env: { DB_SSL_MODE: 'disable' } });
    expect(finding(plain, 'connections.tls')).toMatchObject({
      status: 'ok',
      found: 'plaintext to localhost (loopback or socket: not on the network)',
    });
  });
});
