// PostgreSQL failing over to a new port: the daemon follows DATABASE_URL_FILE (a mounted Secret that
// failover tooling rewrites) without a restart. Two real clusters on two ports; the "primary" is
// stopped, the file is swapped the way Kubernetes swaps a Secret (write elsewhere, rename over).
import { execFileSync } from 'node:child_process';
import { readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { DbPool } from '../../src/db/pool.js';
import { createLogger } from '../../src/log/logger.js';
import { startPrivateCluster } from '../support/postgres.js';
import { getJson, startDaemon, waitFor, type LogLine } from '../support/daemon.js';
import { tempDir } from '../support/temp.js';

const DB = 'app';
let a: LocalCluster;
let b: LocalCluster;
let dir: string;

async function prepare(c: LocalCluster, marker: string) {
  const admin = new pg.Client({ connectionString: c.url('postgres') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${DB}`);
  await admin.end();
  const app = new pg.Client({ connectionString: c.url(DB) });
  await app.connect();
  await app.query(`CREATE TABLE whoami (name text); INSERT INTO whoami VALUES ('${marker}')`);
  await app.end();
}

/** As a Secret update: a new file renamed over the old one (a new inode). */
function writeUrlFile(path: string, content: string) {
  const tmp = `${path}.new`;
  writeFileSync(tmp, `${content}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

beforeAll(async () => {
  [a, b] = await Promise.all([startPrivateCluster(), startPrivateCluster()]);
  await Promise.all([prepare(a, 'cluster-A-marker'), prepare(b, 'cluster-B-marker')]);
  dir = tempDir('pgmaintd-failover-');
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([a?.stop(), b?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('failover to a new port through DATABASE_URL_FILE', () => {
  it('the pools follow the file without a restart: readyz, pg_up and the next backup go to the new server', async () => {
    const urlFile = join(dir, 'database-url');
    writeUrlFile(urlFile, a.url(DB));
    const backups = join(dir, 'backups');
    const d = await startDaemon({
      DATABASE_URL_FILE: urlFile,
      DB_SSL_MODE: 'disable', // local clusters without TLS
      BACKUP_DIR: backups,
      BACKUP_SCHEDULE: '*/2 * * * * *',
      BACKUP_VERIFY_SCHEDULE: 'off',
      MAINTENANCE_SCHEDULE: 'off',
      READYZ_INTERVAL: '200ms',
      METRICS_INTERVAL: '1s',
    });
    const metrics = async () => (await fetch(`${d.base}/metrics`)).text();
    const dumps = () => readdirSync(join(backups, DB)).filter((f) => f.endsWith('.sql.gz'));
    const holds = (file: string, marker: string) =>
      execFileSync('gzip', ['-dc', join(backups, DB, file)])
        .toString()
        .includes(marker);
    try {
      await waitFor(
        () => getJson(`${d.base}/readyz`),
        (r) => r.status === 200,
      );
      await waitFor(metrics, (t) => /^pg_up 1$/m.test(t));
      await d.waitForLog((l) => l.msg === 'backup complete');
      expect(holds(dumps().sort().at(-1)!, 'cluster-A-marker')).toBe(true);

      await a.stopServer(); // the primary is gone
      await waitFor(
        () => getJson(`${d.base}/readyz`),
        (r) => r.status === 503,
        10_000,
      );
      await waitFor(metrics, (t) => /^pg_up 0$/m.test(t), 10_000);
      expect((await getJson(`${d.base}/healthz`)).status).toBe(200); // a restart would not help

      const switchedAt = d.lines().length;
      writeUrlFile(urlFile, b.url(DB)); // failover tooling points the Secret at the new primary
      const ready = await waitFor(
        () => getJson(`${d.base}/readyz`),
        (r) => r.status === 200,
        10_000,
      );
      expect(ready.status).toBe(200);
      await waitFor(metrics, (t) => /^pg_up 1$/m.test(t), 10_000);
      const changed = d.lines().find((l) => l.msg.startsWith('DATABASE_URL_FILE changed'));
      expect(changed).toMatchObject({ to: expect.stringContaining(`:${new URL(b.url()).port}/${DB}`) });
      expect(JSON.stringify(d.lines())).not.toContain(new URL(b.url()).password || 'no-password-in-url');

      const after = (l: LogLine, i: number) => i >= switchedAt && l.msg === 'backup complete';
      await waitFor(
        async () => d.lines().filter(after).length,
        (n) => n >= 1,
        20_000,
      );
      expect(holds(dumps().sort().at(-1)!, 'cluster-B-marker')).toBe(true);
      expect(d.child.exitCode).toBeNull(); // the same process throughout

      // a file that turns invalid keeps the last good URL and says so once
      writeUrlFile(urlFile, 'not a url at all');
      await d.waitForLog((l) => /DATABASE_URL_FILE changed but cannot be used/.test(l.msg), 10_000);
      const badSeen = d.lines().length;
      const badAt = Date.now();
      // still at work on the last good URL: a backup and a readiness check after that both succeed
      await waitFor(
        async () =>
          d
            .lines()
            .slice(badSeen)
            .some((l) => l.msg === 'backup complete'),
        (done) => done,
        20_000,
      );
      const checked = await waitFor(
        () => getJson(`${d.base}/readyz`),
        (r) => Date.parse(String(r.body.checkedAt)) > badAt,
        10_000,
      );
      expect(checked.status).toBe(200);
      expect(d.output()).not.toContain('not a url at all');
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  }, 90_000);
});

describe('DATABASE_URL_FILE at start-up', () => {
  const load = (env: Record<string, string>) =>
    loadConfig({ env, defaultsDir: tempDir('pgmaintd-nodefaults-') });
  const problems = (env: Record<string, string>) => {
    try {
      load(env);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).describe();
    }
    throw new Error('expected a ConfigError');
  };

  it('reads the URL from the file, masks its password, and derives the databases from it', () => {
    const file = join(dir, 'url-ok');
    writeUrlFile(file, 'postgresql://svc:s3cret-in-file@db.internal:6432/orders?sslmode=require');
    const { config, secrets } = load({ DATABASE_URL_FILE: file });
    expect(config.db.urlFile).toBe(file);
    expect(config.db.url).toContain('db.internal:6432/orders');
    expect(config.backup.databases).toEqual(['orders']);
    expect(config.db.ssl.mode).toBe('require');
    expect(secrets).toContain('s3cret-in-file');
  });

  it('refuses both DATABASE_URL and DATABASE_URL_FILE, a missing file, an empty one, and one without a URL (never echoing it)', () => {
    const file = join(dir, 'url-both');
    writeUrlFile(file, 'postgresql://u@h/db');
    expect(problems({ DATABASE_URL: 'postgresql://u@h/db', DATABASE_URL_FILE: file })).toMatch(
      /DATABASE_URL_FILE .*one source of the URL: DATABASE_URL is set too/,
    );
    const missing = problems({ DATABASE_URL_FILE: join(dir, 'nope') });
    expect(missing).toMatch(/DATABASE_URL_FILE.*no such file/);
    expect(missing).not.toMatch(/DATABASE_URL: not set/); // one problem, the file's
    const empty = join(dir, 'url-empty');
    writeUrlFile(empty, '  ');
    expect(problems({ DATABASE_URL_FILE: empty })).toMatch(/the file is empty/);
    const junk = join(dir, 'url-junk');
    writeUrlFile(junk, 'hunter2-password-typed-here');
    const text = problems({ DATABASE_URL_FILE: junk });
    expect(text).toMatch(/does not hold a URL/);
    expect(text).not.toContain('hunter2');
    expect(problems({})).toMatch(/DATABASE_URL: not set; expected .*or DATABASE_URL_FILE/);
  });
});

describe('a pool following DATABASE_URL_FILE', () => {
  it('serves the requests queued on the old pool, sends new ones to the new URL, and keeps its target over a malformed file', async () => {
    const file = join(dir, 'pool-url');
    writeUrlFile(file, b.url(DB));
    const logger = createLogger({ level: 'silent', format: 'json' });
    const pool = new DbPool(
      {
        url: b.url(DB),
        urlFile: file,
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 10_000 },
      },
      { name: 'follow', logger },
    );
    const current = async () =>
      (await pool.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db;
    try {
      const held = await pool.connect(); // the one connection of the old pool, in use
      const queued = pool.query<{ one: number }>('SELECT 1 AS one'); // waits for it
      writeUrlFile(file, b.url('postgres')); // another database: another URL
      await new Promise((r) => setTimeout(r, 1100));
      expect(await current()).toBe('postgres'); // new requests: the new URL
      held.release();
      expect((await queued).rows[0]!.one).toBe(1); // the queued one was served, not dropped
      writeUrlFile(file, 'postgres://u:p%zz@elsewhere/db'); // a stray % in the password
      await new Promise((r) => setTimeout(r, 1100));
      expect(await current()).toBe('postgres');
    } finally {
      await pool.stop();
    }
  });
});
