// The one-shot commands keep standard output for their result and send log lines to standard error,
// so `--json` output can be piped into jq: each command runs through the real CLI with its logs on
// (LOG_LEVEL=debug, and a settings warning), its stdout is parsed (as one JSON document where --json is supported) and must
// hold no log line, and its log lines must have arrived on stderr.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, spawnCli } from '../support/daemon.js';
import { createTestDatabase, useTestDatabase } from '../support/postgres.js';

const db = useTestDatabase();
const dir = mkdtempSync(join(tmpdir(), 'pgmaintd-streams-'));
let target: Awaited<ReturnType<typeof createTestDatabase>>;
let env: Record<string, string> = {};

beforeAll(async () => {
  target = await createTestDatabase('t_streams_target');
  // an S3 setting without S3_BUCKET: a warning every command logs, so each has a log line to send
  env = cliEnv(db.url, dir, { LOG_LEVEL: 'debug', S3_ENDPOINT: 'http://127.0.0.1:9' });
});
afterAll(async () => {
  await target?.drop();
  rmSync(dir, { recursive: true, force: true });
});

/** A pino line: an object with a numeric level and a message. */
function isLogLine(line: string): boolean {
  try {
    const v = JSON.parse(line) as { level?: unknown; msg?: unknown };
    return typeof v.level === 'number' && typeof v.msg === 'string';
  } catch {
    return false;
  }
}

async function run(args: string[]) {
  const cli = spawnCli(args, env);
  const { code } = await cli.exited;
  const stdout = cli.stdout();
  const stderr = cli.stderr();
  const logs = stderr.split('\n').filter(isLogLine);
  expect(
    stdout.split('\n').filter(isLogLine),
    `log lines on stdout of ${args.join(' ')}:\n${stdout}`,
  ).toEqual([]);
  expect(logs.length, `no log line on stderr of ${args.join(' ')}:\n${stderr}`).toBeGreaterThan(0);
  return { code, stdout, stderr, logs: logs.map((l) => JSON.parse(l) as { msg: string }) };
}

// in this order: each needs what the one before it made (the schema, a backup)
describe('results on stdout, logs on stderr', () => {
  it('`migrate up --json`, `migrate status --json`, `migrate verify --json`: stdout is one JSON document', async () => {
    const up = await run(['migrate', 'up', '--json']);
    expect(up.code, up.stderr).toBe(0);
    expect((JSON.parse(up.stdout) as { applied: unknown[] }).applied).toHaveLength(7);
    expect(up.logs.map((l) => l.msg)).toContain('applying migration');
    const status = await run(['migrate', 'status', '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect((JSON.parse(status.stdout) as Array<{ state: string }>).map((r) => r.state)).toEqual(
      Array(7).fill('applied'),
    );
    const verify = await run(['migrate', 'verify', '--json']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, problems: [] });
  });

  it('`backup` and `backups list --json`: the summary and the document on stdout, the job log on stderr', async () => {
    const backup = await run(['backup']);
    expect(backup.code, backup.stderr).toBe(0);
    expect(backup.stdout).toMatch(/^backup of \S+: .*\(\d+ bytes, sha256 [0-9a-f]{64}\)\n$/);
    expect(backup.logs.map((l) => l.msg)).toContain('backup started');
    const list = await run(['backups', 'list', '--json']);
    expect(list.code, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout) as Array<{ database: string; backups: unknown[] }>;
    expect(listed).toEqual([expect.objectContaining({ database: db.name })]);
    expect(listed[0]!.backups).toHaveLength(1);
  });

  it('`restore`, `verify` and `retention`: their summary alone on stdout', async () => {
    const u = new URL(target.url);
    u.password = '';
    const restore = await run(['restore', '--latest', '--target-url', u.toString()]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.stdout).toMatch(/^restored \S+ \(.*, checksum ok\) in [\d.]+s\n$/);
    expect(restore.logs.map((l) => l.msg)).toContain('restore started');
    const verify = await run(['verify']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(/^ok: \S+: \d+ tables compared\n$/);
    const retention = await run(['retention', '--dry-run']);
    expect(retention.code, retention.stderr).toBe(0);
    expect(retention.stdout).toMatch(/^keep {3}\S+ {2}\(.*\)\n$/);
  });

  it('`maintenance run --json`, `doctor --json` and `status --json`: one JSON document on stdout', async () => {
    const maintenance = await run(['maintenance', 'run', '--dry-run', '--json']);
    expect(maintenance.code, maintenance.stderr).toBe(0);
    expect(Array.isArray(JSON.parse(maintenance.stdout))).toBe(true);
    const doctor = await run(['doctor', '--json']);
    expect(JSON.parse(doctor.stdout)).toMatchObject({ exitCode: doctor.code });
    const status = await run(['status', '--json']);
    expect(typeof JSON.parse(status.stdout)).toBe('object');
  });
});
