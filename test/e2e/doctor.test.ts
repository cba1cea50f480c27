// `pg-maintd doctor` as a separate process: exit codes 0, 1, 69 and 64, the readable report, --json,
// and --apply with its before -> after.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { freePort } from '../../src/core/free-port.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { spawnCli } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';

interface JsonReport {
  exitCode: number;
  role: string;
  summary: Record<'ok' | 'warn' | 'fail' | 'info', number>;
  findings: Array<{
    id: string;
    status: string;
    found: string;
    why: string;
    fix: { sql: string[]; steps: string[]; restart: boolean; applicable: boolean } | null;
  }>;
  apply?: { applied: Array<{ id: string; sql: string }>; changes: Array<{ id: string }> };
}

let cluster: LocalCluster;
beforeAll(async () => {
  // healthy but for track_io_timing, which --apply turns on
  cluster = await startPrivateCluster({
    settings: { log_min_duration_statement: "'1s'", log_lock_waits: 'on', track_io_timing: 'off' },
  });
  const c = new pg.Client({ connectionString: cluster.url() });
  await c.connect();
  await c.query(`CREATE EXTENSION pg_stat_statements; CREATE ROLE nodrill LOGIN PASSWORD 'nodrill-pw'`);
  await c.end();
});
afterAll(async () => {
  await cluster?.stop();
});

async function doctor(args: string[], env: Record<string, string>) {
  const cli = spawnCli(['doctor', ...args], { DB_SSL_MODE: 'disable', PGPASSWORD: cluster.password, ...env });
  const { code } = await cli.exited;
  return { code, output: cli.output() };
}

describe('pg-maintd doctor (spawned)', () => {
  it('exits 0 with warnings only, and prints each finding with its fix', async () => {
    const { code, output } = await doctor([], { DATABASE_URL: cluster.url('postgres', 'postgres', null) });
    expect(code, output).toBe(EXIT.OK);
    expect(output).toMatch(/^pg-maintd doctor: postgres@127\.0\.0\.1:\d+\/postgres, PostgreSQL 15\./);
    expect(output).toMatch(/WARN\s+settings\.track_io_timing\s+off/);
    expect(output).toContain("fix: ALTER SYSTEM SET track_io_timing = 'on';");
    expect(output).toMatch(/WARN\s+role\.superuser\s+postgres is a superuser/);
    expect(output).toMatch(/ok\s+pg_stat_statements\.preloaded/);
    expect(output).toMatch(/0 failed, \d+ warnings, \d+ ok, \d+ info: exit 0\n$/);
    expect(output).not.toContain(cluster.password);
  });

  it('--json: one parseable document, exit 1 when a check fails', async () => {
    const { code, output } = await doctor(['--json'], {
      DATABASE_URL: cluster.url('postgres', 'nodrill', null),
      PGPASSWORD: 'nodrill-pw',
    });
    expect(code, output).toBe(EXIT.FAILURE);
    const report = JSON.parse(output) as JsonReport;
    expect(report.exitCode).toBe(1);
    expect(report.role).toBe('nodrill');
    const createdb = report.findings.find((f) => f.id === 'role.createdb')!;
    expect(createdb).toMatchObject({
      status: 'fail',
      fix: { sql: ['ALTER ROLE nodrill CREATEDB;'], applicable: false },
    });
    const tio = report.findings.find((f) => f.id === 'settings.track_io_timing')!;
    expect(tio.fix).toMatchObject({ applicable: true, restart: false });
    expect(report.summary.fail).toBeGreaterThan(0);
  });

  it('--apply --json as a superuser: the fix is applied, before -> after', async () => {
    const { code, output } = await doctor(['--apply', '--json'], {
      DATABASE_URL: cluster.url('postgres', 'postgres', null),
      LOG_LEVEL: 'warn',
    });
    expect(code, output).toBe(EXIT.OK);
    const report = JSON.parse(output) as JsonReport;
    expect(report.apply!.applied).toEqual([
      { id: 'settings.track_io_timing', sql: "ALTER SYSTEM SET track_io_timing = 'on';" },
    ]);
    expect(report.apply!.changes.map((c) => c.id)).toEqual(['settings.track_io_timing']);
    expect(report.findings.find((f) => f.id === 'settings.track_io_timing')!.status).toBe('ok');
  });

  it('exits 69 with a clear message when the database is unreachable (and --json still prints JSON)', async () => {
    const port = await freePort();
    const url = `postgresql://postgres@127.0.0.1:${port}/postgres`;
    const text = await doctor([], { DATABASE_URL: url });
    expect(text.code).toBe(EXIT.UNAVAILABLE);
    expect(text.output).toContain(
      `pg-maintd: cannot use the database at postgres@127.0.0.1:${port}/postgres: connect ECONNREFUSED`,
    );
    expect(text.output).toContain('fix: is PostgreSQL running and listening there?');

    const cli = spawnCli(['doctor', '--json'], { DATABASE_URL: url, DB_SSL_MODE: 'disable' });
    let stdout = '';
    cli.child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    expect((await cli.exited).code).toBe(EXIT.UNAVAILABLE);
    expect(JSON.parse(stdout)).toMatchObject({
      exitCode: 69,
      error: expect.stringContaining('ECONNREFUSED'),
    });
  });

  it('refuses a bad threshold with exit 64', async () => {
    const { code, output } = await doctor(['--connections-warn', '150'], { DATABASE_URL: cluster.url() });
    expect(code).toBe(EXIT.USAGE);
    expect(output).toContain('--connections-warn must be a percentage');
  });
});
