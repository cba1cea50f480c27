// S3_OBJECT_LOCK: every upload carries its lock, retention retains what the store keeps locked, the
// bucket check. The test store (s3rver) implements no Object Lock at all: the fault proxy EMULATES it
// (test/support/s3-object-lock.ts), recording the lock headers of each upload and refusing, as S3
// does (AccessDenied), the delete of an object whose retain-until date is after the proxy's notion
// of now, which the test moves instead of sleeping.
import { Readable, Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { applyRetention } from '../../src/backup/retention.js';
import { S3Storage } from '../../src/backup/storage/s3.js';
import { backupDeps, metricValue } from '../support/backup.js';
import { carriesChecksum, on, startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { useTestDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

const DAY = 86_400_000;
const db = useTestDatabase();
let s3: TestS3;
let proxy: FaultProxy;

beforeAll(async () => {
  await seed(db.pool, 20, 2);
  s3 = await startTestS3();
  proxy = await startFaultProxy({ target: s3.endpoint });
  proxy.objectLock.enable(true);
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
});
afterAll(async () => {
  await proxy?.close();
  await s3?.stop();
});

function lockedStorage(bucket: string, mode: 'governance' | 'compliance', days: number): S3Storage {
  return new S3Storage({
    bucket,
    prefix: 'u/',
    region: s3.region,
    endpoint: proxy.url,
    forcePathStyle: true,
    maxAttempts: 1,
    objectLock: { mode, days },
  });
}

function collectingLogger() {
  const lines: Array<{ level: number; msg: string; until?: string; locked?: number }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as never);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

describe('uploads under S3_OBJECT_LOCK', () => {
  it('each upload carries the mode and a retain-until date of now + days, and a checksum (even with S3_CHECKSUM=when_required)', async () => {
    const bucket = await s3.createBucket('pgmaintd-lockput');
    const storage = lockedStorage(bucket, 'compliance', 3);
    // with an endpoint the SDK's checksums default to when_required: S3 would then get none, and
    // refuses a locked PutObject without one
    expect(storage.checksum).toBe('when_required');
    const before = Date.now();
    try {
      await storage.putSmall('a/x.sql.gz.manifest.json', '{}');
      await storage.putStream('a/x.sql.gz', Readable.from([Buffer.from('small')]), {
        signal: new AbortController().signal,
      });
      const big = randomBytes(11 * 1024 ** 2); // three parts of 5 MiB
      await storage.putStream('a/y.dump.gz', Readable.from([big]), {
        signal: new AbortController().signal,
        expectedBytes: 1,
      });
    } finally {
      storage.close();
    }
    const after = Date.now();
    const uploads = proxy.objectLock.uploads().filter((u) => u.bucket === bucket);
    const whole = uploads.filter((u) => u.kind !== 'UploadPart');
    expect(whole.map((u) => [u.kind, u.key]).sort()).toEqual(
      [
        ['PutObject', 'u/a/x.sql.gz.manifest.json'],
        ['PutObject', 'u/a/x.sql.gz'],
        ['CreateMultipartUpload', 'u/a/y.dump.gz'],
      ].sort(),
    );
    for (const u of whole) {
      expect(u.mode, u.key).toBe('COMPLIANCE');
      // the store's clock (its Date header, whole seconds) or the local one: both are this host's here
      expect(u.until!.getTime(), u.key).toBeGreaterThanOrEqual(before + 3 * DAY - 5_000);
      expect(u.until!.getTime(), u.key).toBeLessThanOrEqual(after + 3 * DAY + 5_000);
    }
    for (const u of uploads.filter((x) => x.kind === 'PutObject' || x.kind === 'UploadPart'))
      expect(carriesChecksum(u.headers) || u.headers['content-md5'] !== undefined, `${u.kind} ${u.key}`).toBe(
        true,
      );
    expect(uploads.filter((u) => u.kind === 'UploadPart')).toHaveLength(3);
    expect(whole.find((u) => u.kind === 'CreateMultipartUpload')!.headers['x-amz-checksum-algorithm']).toBe(
      'CRC32',
    );
  });
});

describe('retention with locked objects', () => {
  it('retains what the store keeps locked (a metric, an info log), deletes the rest, and the locked ones once the lock ends', async () => {
    const bucket = await s3.createBucket('pgmaintd-lockret');
    const store = {
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_RETENTION_MIN_COUNT: '1',
      S3_BUCKET: bucket,
      S3_ENDPOINT: proxy.url,
      S3_FORCE_PATH_STYLE: 'true',
      S3_MAX_ATTEMPTS: '2',
    };
    // the oldest backup was written before the lock was turned on: nothing holds it
    const unlocked = await runBackup(await backupDeps(store), db.name);
    const deps = await backupDeps({ ...store, S3_OBJECT_LOCK: 'governance', S3_OBJECT_LOCK_DAYS: '31' });
    const { logger, lines } = collectingLogger();
    deps.logger = logger;
    const locked = await runBackup(deps, db.name);
    const newest = await runBackup(deps, db.name);
    const later = new Date(Date.now() + 40 * DAY); // all three past 30 days; min count 1 keeps the newest
    const left = async () => (await deps.storage.list('')).map((o) => o.key).sort();
    try {
      const plan = await applyRetention(deps, db.name, deps.config.retention, { now: later });
      expect(plan.remove.map((r) => r.key).sort()).toEqual([unlocked.key, locked.key].sort());
      // its manifest was refused first: the backup stays whole, its data is not even tried
      expect(plan.locked?.map((l) => l.key)).toEqual([`${locked.key}.manifest.json`]);
      const until = plan.locked![0]!.until!;
      expect(Math.abs(until.getTime() - (Date.now() + 31 * DAY))).toBeLessThan(10 * 60_000);
      expect(await left()).toEqual(
        [locked.key, `${locked.key}.manifest.json`, newest.key, `${newest.key}.manifest.json`].sort(),
      );
      const gauge = () =>
        metricValue(deps.registry, 'pgmaintd_backup_retention_locked_objects', { database: db.name });
      expect(await gauge()).toBe(1);
      expect(
        await metricValue(deps.registry, 'pgmaintd_retention_deleted_total', { database: db.name }),
      ).toBe(1);
      expect(lines.filter((l) => l.level >= 40)).toEqual([]); // no warning, no error: retained, not failed
      const said = lines.find((l) => /retention retained 1 object\(s\) the store keeps locked/.test(l.msg));
      expect(said).toMatchObject({ level: 30, locked: 1, until: until.toISOString() });
      expect((await deps.catalog.list(db.name)).good.map((g) => g.key)).toContain(locked.key);

      // the proxy's clock passes the retain-until date: the next run deletes it
      proxy.objectLock.setNow(Date.now() + 32 * DAY);
      const again = await applyRetention(deps, db.name, deps.config.retention, { now: later });
      expect(again.locked).toEqual([]);
      expect(await left()).toEqual([newest.key, `${newest.key}.manifest.json`].sort());
      expect(await gauge()).toBe(0);
      expect(
        await metricValue(deps.registry, 'pgmaintd_retention_deleted_total', { database: db.name }),
      ).toBe(2);
    } finally {
      proxy.objectLock.setNow(undefined);
      deps.storage.close();
    }
  });

  it('a refused delete of an object that is not locked is a failure, not a lock', async () => {
    const bucket = await s3.createBucket('pgmaintd-lockdeny');
    const storage = lockedStorage(bucket, 'governance', 1);
    try {
      // written without a lock (emulation off), then refused anyway: missing permission, say
      proxy.objectLock.enable(false);
      await storage.putSmall('a/x.json', '{}');
      proxy.objectLock.enable(true);
      proxy.status(200, {
        times: 1,
        match: on.kind('DeleteObjects'),
        body: '<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult><Error><Key>u/a/x.json</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>',
      });
      await expect(storage.delete(['a/x.json'])).rejects.toThrow(
        /deleting 1 object\(s\) failed, e\.g\. u\/a\/x\.json/,
      );
    } finally {
      proxy.objectLock.enable(true);
      proxy.pass();
      storage.close();
    }
  });
});

describe('the bucket check under S3_OBJECT_LOCK', () => {
  it('refuses a bucket without Object Lock with the fix, passes one with it, and warns when the store cannot say', async () => {
    const bucket = await s3.createBucket('pgmaintd-lockcheck');
    const check = async () => {
      const storage = lockedStorage(bucket, 'governance', 30);
      const notices: string[] = [];
      storage.onNotice = (m) => notices.push(m);
      try {
        await storage.check();
        return notices;
      } finally {
        storage.close();
      }
    };
    try {
      proxy.objectLock.setBucketEnabled(false);
      await expect(check()).rejects.toMatchObject({
        message: expect.stringMatching(
          /S3_OBJECT_LOCK is governance, but the bucket .* does not have Object Lock enabled/,
        ),
        hint: expect.stringMatching(/--object-lock-enabled-for-bucket/),
      });
      proxy.objectLock.setBucketEnabled(true);
      expect(await check()).toEqual([]);
      // a store without the API (or a role without s3:GetBucketObjectLockConfiguration)
      proxy.status(501, { times: 1, code: 'NotImplemented', match: (r) => r.query.has('object-lock') });
      expect(await check()).toEqual([expect.stringMatching(/could not be read .*NotImplemented/)]);
    } finally {
      proxy.objectLock.setBucketEnabled(true);
      proxy.pass();
    }
  });
});
