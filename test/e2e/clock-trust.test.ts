// The clock is not the truth. A replica whose clock is 40 days fast (libfaketime, for that process
// only) must not delete good backups, and its future-dated backup must not become the "latest" once
// the clock is fixed; nor when it is the database server's clock that disagrees (that server runs
// under libfaketime), which is how a wrong host clock shows against a local disk that shares it.
import { readFileSync } from 'node:fs';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { craftBackup, writeBackup } from '../support/crafted-backup.js';
import { cliEnv, runCli, startDaemon, waitFor } from '../support/daemon.js';
import { fakeClockEnv } from '../support/fake-clock.js';
import { createTestDatabase, startPrivateCluster, useTestDatabase } from '../support/postgres.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { seed } from '../support/seed.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();
const DAY = 86_400_000;
let s3: TestS3;

beforeAll(async () => {
  await seed(db.pool, 10, 1);
  s3 = await startTestS3();
});
afterAll(async () => {
  await s3?.stop();
});

describe('a replica whose clock is 40 days fast (S3)', () => {
  it('deletes nothing, and its future-dated backup is never the latest once the clock is right again', async () => {
    const bucket = await s3.createBucket('pgmaintd-clock');
    const env = cliEnv(db.url, tempDir('pgmaintd-unused-'), {
      LOG_LEVEL: 'info',
      S3_BUCKET: bucket,
      S3_ENDPOINT: s3.endpoint,
      S3_REGION: s3.region,
      S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      BACKUP_RETENTION_DAYS: '30',
      BACKUP_RETENTION_MIN_COUNT: '2',
    });
    const client = s3.client();
    const good = [10, 5, 1].map((days) => {
      const b = craftBackup(db.name, `CREATE TABLE public.from_${days}_days_ago (id int);\n`, {
        at: new Date(Date.now() - days * DAY),
      });
      return { days, ...b };
    });
    for (const b of good) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: b.key, Body: b.bytes }));
      await client.send(
        new PutObjectCommand({ Bucket: bucket, Key: `${b.key}.manifest.json`, Body: b.manifestText }),
      );
    }

    const fast = await runCli(['backup'], { ...env, ...fakeClockEnv('+40d') });
    // the backup itself is good; retention refused to judge ages by this clock
    expect(fast.code, fast.out).toBe(EXIT.RETENTION_FAILED);
    expect(fast.out).toMatch(
      /the backup of \S+ is good, but retention after it failed: retention skipped: the local clock is 345\d{4} s ahead of the store's clock/,
    );
    expect(fast.out).toMatch(
      /"msg":"this host's clock is ahead of the database server's: the backup is kept but flagged misdated/,
    );

    // the clock is fixed: every good backup is there, the fast one is suspicious, the latest is a day old
    const listed = JSON.parse((await runCli(['backups', 'list', '--json'], env)).out) as Array<{
      backups: Array<{ key: string; suspicious: { reason: string } | null }>;
    }>;
    const keys = listed[0]!.backups.map((b) => b.key);
    for (const b of good) expect(keys).toContain(b.key);
    expect(listed[0]!.backups.filter((b) => b.suspicious).length).toBe(1);
    const target = await createTestDatabase('t_clock_target');
    try {
      const u = new URL(target.url);
      u.password = '';
      const restore = await runCli(['restore', '--latest', '--target-url', u.toString()], env);
      expect(restore.code, restore.out).toBe(0);
      expect(restore.out).toContain(`restored ${good[2]!.key}`);
    } finally {
      await target.drop();
    }
    // the gauges an alert on old backups reads: the newest trusted one, not the one from the future
    const d = await startDaemon(env);
    try {
      const text = await waitFor(
        async () => (await fetch(`${d.base}/metrics`)).text(),
        (t) => t.includes(`pgmaintd_backup_stored{database="${db.name}"}`),
      );
      expect(text).toContain(
        `pgmaintd_backup_last_success_timestamp_seconds{database="${db.name}"} ${Date.parse(good[2]!.manifest.finishedAt) / 1000}`,
      );
      expect(text).toContain(`pgmaintd_backup_suspicious{database="${db.name}",reason="future_dated"} 1`);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });

  it('the daemon on a fast clock: each scheduled retention is skipped, counted, and the skew exported', async () => {
    const dir = tempDir('pgmaintd-clock-daemon-');
    // the fast replica's own backups are future-dated, so not counted: the newer old one is the minimum
    writeBackup(dir, db.name, 'SELECT 1;\n', { at: new Date(Date.now() - 400 * DAY) });
    const old = writeBackup(dir, db.name, 'SELECT 1;\n', { at: new Date(Date.now() - 401 * DAY) });
    const env = cliEnv(db.url, dir, {
      LOG_LEVEL: 'info',
      BACKUP_SCHEDULE: '*/2 * * * * *',
      BACKUP_RETENTION_MIN_COUNT: '1',
      ...fakeClockEnv('+40d'),
    });
    const d = await startDaemon(env);
    try {
      const text = await waitFor(
        async () => (await fetch(`${d.base}/metrics`)).text(),
        (t) => /^pgmaintd_retention_skipped_total\{database="[^"]+",reason="clock_skew"\} [1-9]/m.test(t),
        60_000,
        250,
      );
      const skew = /^pgmaintd_clock_skew_seconds\{reference="store"\} (\S+)$/m.exec(text);
      expect(Number(skew?.[1])).toBeGreaterThan(39 * 86_400);
      expect(/^pgmaintd_clock_skew_seconds\{reference="database"\} (\S+)$/m.exec(text)).not.toBeNull();
      expect(text).toContain(`pgmaintd_retention_deleted_total{database="${db.name}"} 0`);
      await d.waitForLog((l) => l.msg.startsWith('retention skipped: the local clock is'));
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
    expect(readFileSync(old.path).length).toBeGreaterThan(0);
  });
});

describe('a replica whose clock is 40 days slow (local directory)', () => {
  it('its backup is flagged past-dated: never the latest, and never deleted for an age it does not have', async () => {
    const dir = tempDir('pgmaintd-clock-slow-');
    const real = writeBackup(dir, db.name, 'CREATE TABLE public.from_yesterday (id int);\n', {
      at: new Date(Date.now() - DAY),
    });
    const env = cliEnv(db.url, dir, { LOG_LEVEL: 'info', BACKUP_RETENTION_MIN_COUNT: '1' });
    const slow = await runCli(['backup'], { ...env, ...fakeClockEnv('-40d') });
    // nothing for retention to delete: its own backup is kept as misdated, yesterday's as the minimum
    expect(slow.code, slow.out).toBe(0);
    expect(slow.out).toMatch(
      /"msg":"this host's clock is behind the database server's: the backup is kept but flagged misdated/,
    );
    const key = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(slow.out)![1]!;
    // the clock is right again
    const table = await runCli(['backups', 'list'], { ...env, LOG_LEVEL: 'warn' });
    expect(table.out).toMatch(
      new RegExp(
        `${key}.*SUSPICIOUS: started \\S+ by its writer's clock, 345\\d{4} s behind the database server's clock`,
      ),
    );
    const retention = await runCli(['retention'], env);
    expect(retention.code, retention.out).toBe(0);
    expect(retention.out).toMatch(new RegExp(`keep +${key} +\\(misdated`));
    expect(retention.out).toMatch(new RegExp(`keep +${real.key} +\\(min-count`));
    const target = await createTestDatabase('t_clock_slow');
    try {
      const u = new URL(target.url);
      u.password = '';
      const restore = await runCli(['restore', '--latest', '--target-url', u.toString()], env);
      expect(restore.code, restore.out).toBe(0);
      expect(restore.out).toContain(`restored ${real.key}`);
    } finally {
      await target.drop();
    }
  });
});

describe("the database server's clock disagrees (a local disk shares this host's clock)", () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({ env: fakeClockEnv('-40d') });
    const c = new pg.Client({ connectionString: cluster.url() });
    await c.connect();
    await c.query('CREATE DATABASE shop');
    await c.end();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('retention deletes nothing, and the backup is flagged future-dated against the database clock', async () => {
    const dir = tempDir('pgmaintd-dbclock-');
    const old = writeBackup(dir, 'shop', 'SELECT 1;\n', { at: new Date(Date.now() - 60 * DAY) });
    writeBackup(dir, 'shop', 'SELECT 1;\n', { at: new Date(Date.now() - 50 * DAY) });
    const env = cliEnv(cluster.url('shop'), dir, { LOG_LEVEL: 'info', BACKUP_RETENTION_MIN_COUNT: '1' });
    const r = await runCli(['backup'], env);
    expect(r.code, r.out).toBe(EXIT.RETENTION_FAILED);
    expect(r.out).toMatch(
      /retention skipped: the local clock is 345\d{4} s ahead of the database server's clock/,
    );
    expect(readFileSync(old.path).length).toBeGreaterThan(0);
    const table = await runCli(['backups', 'list'], { ...env, LOG_LEVEL: 'warn' });
    expect(table.out).toMatch(
      /SUSPICIOUS: started \S+ by its writer's clock, 345\d{4} s ahead of the database server's clock/,
    );
  });
});
