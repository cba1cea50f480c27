// Retention on real stored backups: only its own prefix and database, the minimum count, leftovers.
import { mkdirSync, utimesSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { applyRetention } from '../../src/backup/retention.js';
import { backupDeps, metricValue } from '../support/backup.js';
import { immutableUnsupported, makeImmutable } from '../support/immutable.js';
import { useTestDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';

const db = useTestDatabase();
beforeAll(async () => {
  await seed(db.pool, 20, 2);
});

const DAY = 86_400_000;

function touch(path: string, content = 'x', ageDays = 0) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  const t = new Date(Date.now() - ageDays * DAY);
  utimesSync(path, t, t);
}

describe('retention on a local directory', () => {
  it('deletes only past-policy backups of its own database, keeps the minimum count, removes old leftovers', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_RETENTION_MIN_COUNT: '2',
    });
    const made = [];
    for (let i = 0; i < 4; i++) {
      made.push(await runBackup(deps, db.name));
      await new Promise((r) => setTimeout(r, 1000)); // distinct second-resolution names
    }
    // Things that are not ours, or not complete:
    const other = `other/other_20200101_000000.sql.gz`;
    touch(join(deps.dir, other), 'x', 400);
    touch(join(deps.dir, `${other}.manifest.json`), '{}', 400);
    touch(join(deps.dir, 'unrelated.txt'), 'x', 400);
    touch(join(deps.dir, db.name, 'README.txt'), 'notes', 400); // inside our prefix, but not a backup name
    const oldLeftover = `${db.name}/${db.name}_20200101_000000.sql.gz`;
    const newLeftover = `${db.name}/${db.name}_20991231_000000.sql.gz.partial-abcd1234`;
    touch(join(deps.dir, oldLeftover), 'partial', 3);
    touch(join(deps.dir, newLeftover), 'partial', 0);

    // 40 days on: all four are past 30 days; the newest two stay for the minimum count
    const now = new Date(Date.now() + 40 * DAY);
    const dry = await applyRetention(deps, db.name, deps.config.retention, { dryRun: true, now });
    expect(dry.remove.map((r) => r.key).sort()).toEqual(
      [made[0]!.key, made[1]!.key, oldLeftover, newLeftover].sort(),
    );
    expect(existsSync(join(deps.dir, made[0]!.key))).toBe(true); // dry run deleted nothing

    const plan = await applyRetention(deps, db.name, deps.config.retention, { now });
    expect(plan.keep.map((k) => k.key)).toEqual([made[3]!.key, made[2]!.key]);
    const left = readdirSync(join(deps.dir, db.name)).sort();
    expect(left).toEqual(
      [
        'README.txt',
        ...[made[2]!, made[3]!].flatMap((m) =>
          [m.key, `${m.key}.manifest.json`].map((k) => k.split('/')[1]!),
        ),
      ].sort(),
    );
    for (const k of [other, `${other}.manifest.json`, 'unrelated.txt'])
      expect(existsSync(join(deps.dir, k)), k).toBe(true);
    expect(await metricValue(deps.registry, 'pgmaintd_retention_deleted_total', { database: db.name })).toBe(
      4,
    );
    expect(await metricValue(deps.registry, 'pgmaintd_backup_stored', { database: db.name })).toBe(2);

    // Far in the future, still never fewer than the minimum count
    await applyRetention(deps, db.name, deps.config.retention, { now: new Date(Date.now() + 3650 * DAY) });
    expect((await deps.catalog.list(db.name)).good.map((g) => g.key)).toEqual([made[3]!.key, made[2]!.key]);
  });
});

describe('retention on a local directory with immutable files', () => {
  it('counts a file it may not delete (chattr +i) as retained, not failed, deletes the rest, and it once unlocked', async (ctx) => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_RETENTION_MIN_COUNT: '1',
    });
    const unsupported = immutableUnsupported(deps.dir);
    if (unsupported) {
      console.log(`skipped: ${unsupported}`);
      ctx.skip();
    }
    const oldest = await runBackup(deps, db.name);
    const locked = await runBackup(deps, db.name);
    const newest = await runBackup(deps, db.name);
    const now = new Date(Date.now() + 40 * DAY);
    const unlock = makeImmutable(join(deps.dir, `${locked.key}.manifest.json`));
    const gauge = () =>
      metricValue(deps.registry, 'pgmaintd_backup_retention_locked_objects', { database: db.name });
    try {
      const plan = await applyRetention(deps, db.name, deps.config.retention, { now });
      expect(plan.locked?.map((l) => l.key)).toEqual([`${locked.key}.manifest.json`]);
      expect(existsSync(join(deps.dir, oldest.key))).toBe(false);
      // kept whole: its data stays with the manifest that could not go
      expect(existsSync(join(deps.dir, locked.key))).toBe(true);
      expect(existsSync(join(deps.dir, newest.key))).toBe(true);
      expect(await gauge()).toBe(1);
      expect(
        await metricValue(deps.registry, 'pgmaintd_retention_deleted_total', { database: db.name }),
      ).toBe(1);

      unlock();
      const again = await applyRetention(deps, db.name, deps.config.retention, { now });
      expect(again.locked).toEqual([]);
      expect(existsSync(join(deps.dir, locked.key))).toBe(false);
      expect(existsSync(join(deps.dir, `${locked.key}.manifest.json`))).toBe(false);
      expect(await gauge()).toBe(0);
    } finally {
      unlock();
    }
  });
});

describe('retention on S3', () => {
  it('deletes nothing when the listing fails, and works once the store answers again', async () => {
    const { startTestS3 } = await import('../support/s3.js');
    const { startFaultProxy, on } = await import('../support/fault-proxy.js');
    const s3 = await startTestS3();
    const proxy = await startFaultProxy({ target: s3.endpoint });
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    try {
      const bucket = await s3.createBucket();
      const deps = await backupDeps({
        DATABASE_URL: db.url,
        BACKUP_DATABASES: db.name,
        BACKUP_RETENTION_MIN_COUNT: '1',
        S3_BUCKET: bucket,
        S3_ENDPOINT: proxy.url,
        S3_FORCE_PATH_STYLE: 'true',
        S3_MAX_ATTEMPTS: '2',
      });
      const first = await runBackup(deps, db.name);
      await new Promise((r) => setTimeout(r, 1000));
      const second = await runBackup(deps, db.name);
      const later = new Date(Date.now() + 40 * DAY); // both past 30 days; min count 1 keeps the newer

      proxy.status(500, { code: 'InternalError', match: on.kind('ListObjectsV2') });
      proxy.clearLog();
      await expect(applyRetention(deps, db.name, deps.config.retention, { now: later })).rejects.toThrow(
        /listing backups failed/,
      );
      expect(proxy.count('DeleteObjects')).toBe(0);
      expect(
        await metricValue(deps.registry, 'pgmaintd_retention_deleted_total', { database: db.name }),
      ).toBe(0);

      proxy.pass();
      const plan = await applyRetention(deps, db.name, deps.config.retention, { now: later });
      expect(plan.remove.map((r) => r.key)).toEqual([first.key]);
      // two batches: the manifest first (the backup stops being one), then its data and drill records
      expect(proxy.count('DeleteObjects')).toBe(2);
      const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
      const left = await s3.client().send(new ListObjectsV2Command({ Bucket: bucket }));
      expect(left.Contents!.map((o) => o.Key).sort()).toEqual([second.key, `${second.key}.manifest.json`]);
      deps.storage.close();
    } finally {
      await proxy.close();
      await s3.stop();
    }
  });
});

describe('S3 deletes', () => {
  it('deletes in batches of at most 1000 keys (DeleteObjects)', async () => {
    const { startTestS3 } = await import('../support/s3.js');
    const { startFaultProxy } = await import('../support/fault-proxy.js');
    const { S3Storage } = await import('../../src/backup/storage/s3.js');
    const s3 = await startTestS3();
    const proxy = await startFaultProxy({ target: s3.endpoint });
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    const bucket = await s3.createBucket();
    const storage = new S3Storage({
      bucket,
      prefix: 'p/',
      endpoint: proxy.url,
      forcePathStyle: true,
      maxAttempts: 2,
    });
    try {
      const keys = Array.from({ length: 1234 }, (_, i) => `app/obj-${String(i).padStart(4, '0')}`);
      for (let i = 0; i < keys.length; i += 100)
        await Promise.all(keys.slice(i, i + 100).map((k) => storage.putSmall(k, 'x')));
      await storage.putSmall('other/keep', 'x');
      proxy.clearLog();
      await storage.delete(keys);
      // two batches, 1000 + 234 keys (s3rver sometimes answers a 1000-key batch 500; the SDK then retries it)
      const firstAttempts = proxy.requests.filter((r) => r.kind === 'DeleteObjects' && r.attempt === 1);
      expect(firstAttempts).toHaveLength(2);
      // (s3rver answers 500 to a listing of over 1000 keys, so the deletions are checked key by key)
      for (const k of [keys[0]!, keys[999]!, keys[1000]!, keys[1233]!])
        expect(await storage.getSmall(k)).toBeUndefined();
      expect((await storage.getSmall('other/keep'))?.toString()).toBe('x');
    } finally {
      storage.close();
      await proxy.close();
      await s3.stop();
    }
  });
});
