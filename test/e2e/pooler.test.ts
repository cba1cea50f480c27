// A transaction-mode pooler between pg-maintd and PostgreSQL: a real PgBouncer in front of the
// harness's server. PgBouncer refuses the session settings every pg-maintd connection carries, so
// that is what a first run meets: a message that says to connect directly. One told to ignore them
// lets pg-maintd in, and then doctor's finding and the daemon's start-up warning say what is wrong.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { poolerByAddress } from '../../src/db/pooler.js';
import { parseDatabaseUrl } from '../../src/core/database-url.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { cliEnv, runCli, startDaemon } from '../support/daemon.js';
import { startPgBouncer, type TestPgBouncer } from '../support/pgbouncer.js';
import { useTestDatabase } from '../support/postgres.js';

const db = useTestDatabase();
const bouncers: TestPgBouncer[] = [];
let strict: TestPgBouncer; // transaction mode, as installed
let lenient: TestPgBouncer; // transaction mode, ignore_startup_parameters = options
let session: TestPgBouncer; // session mode, ignore_startup_parameters = options

beforeAll(async () => {
  strict = await startPgBouncer(db.url, { poolMode: 'transaction' });
  lenient = await startPgBouncer(db.url, { poolMode: 'transaction', ignoreStartupOptions: true });
  session = await startPgBouncer(db.url, { poolMode: 'session', ignoreStartupOptions: true });
  bouncers.push(strict, lenient, session);
});
afterAll(async () => {
  await Promise.all(bouncers.map((b) => b.stop()));
});

const env = (url: string) => cliEnv(url, '/nonexistent-backups', { LOG_LEVEL: 'warn' });

interface DoctorJson {
  findings: Array<{ id: string; status: string; found: string; fix?: { steps?: string[] } }>;
}
async function poolerFinding(url: string) {
  const r = await runCli(['doctor', '--json'], env(url));
  const report = JSON.parse(r.out.slice(r.out.indexOf('{'))) as DoctorJson;
  return report.findings.find((f) => f.id === 'connections.pooler');
}

describe('a transaction-mode pooler', () => {
  it.each([
    ['doctor', ['doctor']],
    ['migrate status', ['migrate', 'status']],
  ])('PgBouncer as installed: `%s` exits 69 saying to connect straight to PostgreSQL', async (_n, args) => {
    const r = await runCli(args, env(strict.url));
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    expect(r.out).toMatch(/unsupported startup parameter: options/);
    expect(r.out).toMatch(
      /fix: DATABASE_URL goes through a connection pooler \(PgBouncer\) that refuses the session settings .*: connect it straight to PostgreSQL \(usually port 5432\), not through the pooler/,
    );
    expect(r.out).not.toMatch(/\n\s+at \S/);
  });

  it('PgBouncer that ignores them: doctor fails connections.pooler, proven by the server processes', async () => {
    const f = await poolerFinding(lenient.url);
    expect(f, 'connections.pooler').toMatchObject({ status: 'fail' });
    expect(f!.found).toMatch(
      /^a transaction-mode pooler: (two sessions ran their statements in one server process|one session's statements ran in two server processes)/,
    );
    expect(f!.fix!.steps![0]).toMatch(/connect pg-maintd straight to PostgreSQL \(usually port 5432\)/);
  });

  it('in session mode, or connected directly, the finding is ok', async () => {
    expect(await poolerFinding(session.url)).toMatchObject({ status: 'ok' });
    expect(await poolerFinding(db.url)).toMatchObject({ status: 'ok' });
  });

  it('the daemon warns once at start, with found, why and fix', async () => {
    const d = await startDaemon({ ...env(lenient.url), LOG_LEVEL: 'info' });
    try {
      const line = await d.waitForLog((l) => /through a transaction-mode pooler/.test(l.msg));
      expect(line).toMatchObject({ level: 40 });
      expect(String(line.found)).toMatch(/server process/);
      expect(String(line.why)).toMatch(/advisory locks/);
      expect(String(line.fix)).toMatch(/port 5432/);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });

  it("Supabase's pooler address is a guess the probe does not need", () => {
    const at = (url: string) => poolerByAddress(parseDatabaseUrl(url));
    expect(at('postgresql://u@aws-0-eu-central-1.pooler.supabase.com:6543/postgres')).toMatch(
      /Supabase's transaction-mode pooler/,
    );
    expect(at('postgresql://u@pgbouncer.internal:6543/app')).toMatch(/port 6543/);
    expect(at('postgresql://u@aws-0-eu-central-1.pooler.supabase.com:5432/postgres')).toBeUndefined(); // session mode
    expect(at('postgresql://u@db.abcdefgh.supabase.co:5432/postgres')).toBeUndefined();
  });
});
