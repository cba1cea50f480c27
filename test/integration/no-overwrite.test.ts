// Keys are unique even for two runs in the same second, and no write ever replaces an object:
// link(2) on a directory, If-None-Match: * on S3 (enforced here by the fault proxy, as AWS S3 and
// MinIO enforce it: the test store, s3rver, ignores the header; that one part is emulated).
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { S3Storage } from '../../src/backup/storage/s3.js';
import { ObjectExistsError } from '../../src/backup/storage/storage.js';
import { backupDeps, readStored } from '../support/backup.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { useTestDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();
let s3: TestS3;
let proxy: FaultProxy;
let bucket: string;

beforeAll(async () => {
  await seed(db.pool, 30, 2);
  s3 = await startTestS3();
  proxy = await startFaultProxy({ target: s3.endpoint });
  bucket = await s3.createBucket('pgmaintd-noover');
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
});
afterAll(async () => {
  await proxy?.close();
  await s3?.stop();
});

function viaProxy(): S3Storage {
  return new S3Storage({
    bucket,
    prefix: 'p/',
    region: s3.region,
    endpoint: proxy.url,
    forcePathStyle: true,
    maxAttempts: 1,
  });
}
const body = (s: string) => Readable.from([Buffer.from(s)]);

describe('two backups in the same second', () => {
  it('get two keys and are both kept, each matching its own manifest', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-12-02T06:14:02.500Z') });
    let made;
    try {
      made = await Promise.all([runBackup(deps, db.name), runBackup(deps, db.name)]);
    } finally {
      vi.useRealTimers();
    }
    expect(made[0]!.startedAt).toBe(made[1]!.startedAt);
    expect(made[0]!.key).not.toBe(made[1]!.key);
    const good = (await deps.catalog.list(db.name)).good;
    expect(good.map((g) => g.key).sort()).toEqual(made.map((m) => m.key).sort());
    for (const m of made) {
      const stored = await readStored((await deps.storage.getStream(m.key)) as AsyncIterable<unknown>);
      expect(stored.sha256).toBe(m.sha256);
    }
  });
});

describe('a directory never has an object replaced', () => {
  it('a second write of a key fails with ObjectExistsError and leaves the first, and no temporary file', async () => {
    const dir = tempDir('pgmaintd-noover-');
    const fs = new FsStorage(dir);
    await fs.putStream('app/a.sql.gz', body('first'), { signal: new AbortController().signal });
    await expect(
      fs.putStream('app/a.sql.gz', body('second'), { signal: new AbortController().signal }),
    ).rejects.toBeInstanceOf(ObjectExistsError);
    await fs.putSmall('app/a.sql.gz.manifest.json', '{"first":true}');
    await expect(fs.putSmall('app/a.sql.gz.manifest.json', '{"second":true}')).rejects.toThrow(
      /an object already exists under app\/a\.sql\.gz\.manifest\.json .*pg-maintd never replaces one/,
    );
    expect(readFileSync(join(dir, 'app/a.sql.gz'), 'utf8')).toBe('first');
    expect(readFileSync(join(dir, 'app/a.sql.gz.manifest.json'), 'utf8')).toBe('{"first":true}');
    expect(readdirSync(join(dir, 'app')).sort()).toEqual(['a.sql.gz', 'a.sql.gz.manifest.json']);
    // nothing is ever replaced, not even a drill record: each drill writes a new one
    await fs.putSmall('app/a.sql.gz.verify-20261203_000000-ab12.json', '1');
    await expect(fs.putSmall('app/a.sql.gz.verify-20261203_000000-ab12.json', '2')).rejects.toBeInstanceOf(
      ObjectExistsError,
    );
    expect(readFileSync(join(dir, 'app/a.sql.gz.verify-20261203_000000-ab12.json'), 'utf8')).toBe('1');
  });

  it('keys that leave the directory are refused as such', async () => {
    const fs = new FsStorage(tempDir('pgmaintd-noover-'));
    for (const key of ['../x', 'a/../../x', '/etc/passwd', 'a//b', 'a/./b'])
      await expect(fs.getSmall(key), key).rejects.toThrow(/is not a key inside the backup directory/);
  });
});

describe('a directory whose entries were swapped for links or FIFOs', () => {
  it('neither writes nor reads through a link that leads out, and never blocks on a FIFO', async () => {
    const dir = tempDir('pgmaintd-links-');
    const outside = tempDir('pgmaintd-outside-');
    const fs = new FsStorage(dir);
    symlinkSync(outside, join(dir, 'app'));
    await expect(fs.putSmall('app/x.manifest.json', '{}')).rejects.toThrow(
      /app leads elsewhere \(to .*\) through a symbolic link/,
    );
    writeFileSync(join(outside, 'y.manifest.json'), '{}');
    writeFileSync(join(outside, 'app_20250101_020000.sql.gz'), 'not ours');
    await expect(fs.getSmall('app/y.manifest.json')).rejects.toThrow(/through a symbolic link/);
    // neither listed (retention would take what it finds there for leftovers) nor deleted
    await expect(fs.list('app/')).rejects.toThrow(/through a symbolic link/);
    await expect(fs.delete(['app/app_20250101_020000.sql.gz'])).rejects.toThrow(/through a symbolic link/);
    expect(readdirSync(outside).sort()).toEqual(['app_20250101_020000.sql.gz', 'y.manifest.json']);
    // nor is a folder made through it (mkdir follows links in the path, as every call does)
    await expect(fs.putSmall('app/sub/z.manifest.json', '{}')).rejects.toThrow(/through a symbolic link/);
    expect(readdirSync(outside).sort()).toEqual(['app_20250101_020000.sql.gz', 'y.manifest.json']);
    // a link to another database's folder, inside the directory, is no better
    mkdirSync(join(dir, 'other'));
    writeFileSync(join(dir, 'other', 'other_20250101_020000.sql.gz'), 'not app2');
    symlinkSync(join(dir, 'other'), join(dir, 'app2'));
    await expect(fs.list('app2/')).rejects.toThrow(/app2 leads elsewhere .* through a symbolic link/);
    await expect(fs.delete(['app2/other_20250101_020000.sql.gz'])).rejects.toThrow(/symbolic link/);
    expect(readdirSync(join(dir, 'other'))).toEqual(['other_20250101_020000.sql.gz']);
    // a FIFO where a manifest or a backup was: refused at once (reading it would wait for ever)
    mkdirSync(join(dir, 'shop'));
    execFileSync('mkfifo', [join(dir, 'shop', 'k.sql.gz'), join(dir, 'shop', 'k.sql.gz.manifest.json')]);
    await expect(fs.getSmall('shop/k.sql.gz.manifest.json')).rejects.toThrow(/is not a regular file/);
    await expect(fs.getStream('shop/k.sql.gz')).rejects.toThrow(/is not a regular file/);
    // nor listed: only regular files are objects
    expect(await fs.list('shop/')).toEqual([]);
  });
});

describe('S3 never has an object replaced', () => {
  it('every write of a new object carries If-None-Match: *; a store that enforces it refuses a taken key (412)', async () => {
    const storage = viaProxy();
    proxy.enforceIfNoneMatch(true);
    try {
      const key = `app/${randomBytes(4).toString('hex')}.sql.gz`;
      await storage.putStream(key, body('first'), { signal: new AbortController().signal });
      await storage.putSmall(`${key}.manifest.json`, '{"first":true}');
      proxy.clearLog();
      await expect(
        storage.putStream(key, body('second'), { signal: new AbortController().signal }),
      ).rejects.toBeInstanceOf(ObjectExistsError);
      await expect(storage.putSmall(`${key}.manifest.json`, '{"second":true}')).rejects.toBeInstanceOf(
        ObjectExistsError,
      );
      const writes = proxy.requests.filter(
        (r) => r.kind === 'PutObject' || r.kind === 'CompleteMultipartUpload',
      );
      expect(writes.length).toBeGreaterThan(0);
      expect(writes.every((r) => r.ifNoneMatch === '*' && r.status === 412)).toBe(true);
      const first = await s3.client().send(new GetObjectCommand({ Bucket: bucket, Key: `p/${key}` }));
      expect(await first.Body!.transformToString()).toBe('first');
      // a drill record carries the condition as every other object does
      await storage.putSmall(`${key}.verify-20261203_000000-ab12.json`, '1');
      await expect(storage.putSmall(`${key}.verify-20261203_000000-ab12.json`, '2')).rejects.toBeInstanceOf(
        ObjectExistsError,
      );
      expect(
        proxy.requests.filter((r) => r.url.includes('.verify-')).every((r) => r.ifNoneMatch === '*'),
      ).toBe(true);
    } finally {
      proxy.enforceIfNoneMatch(false);
      storage.close();
    }
  });

  it('a multipart upload to a taken key is refused at completion, and nothing of it stays', async () => {
    const storage = viaProxy();
    proxy.enforceIfNoneMatch(true);
    try {
      const key = `app/${randomBytes(4).toString('hex')}.dump.gz`;
      await s3.client().send(new PutObjectCommand({ Bucket: bucket, Key: `p/${key}`, Body: 'first' }));
      const big = randomBytes(11 * 1024 ** 2); // three parts of 5 MiB
      await expect(
        storage.putStream(key, Readable.from([big]), {
          signal: new AbortController().signal,
          expectedBytes: 1,
        }),
      ).rejects.toBeInstanceOf(ObjectExistsError);
      const complete = proxy.requests.filter((r) => r.kind === 'CompleteMultipartUpload');
      expect(complete.at(-1)).toMatchObject({ ifNoneMatch: '*', status: 412 });
      expect(proxy.requests.some((r) => r.kind === 'AbortMultipartUpload')).toBe(true);
      const first = await s3.client().send(new GetObjectCommand({ Bucket: bucket, Key: `p/${key}` }));
      expect(await first.Body!.transformToString()).toBe('first');
    } finally {
      proxy.enforceIfNoneMatch(false);
      storage.close();
    }
  });

  it('a store that does not implement the condition (501) is written to without it, once told', async () => {
    const storage = viaProxy();
    const notices: string[] = [];
    storage.onNotice = (m) => notices.push(m);
    try {
      proxy.status(501, {
        code: 'NotImplemented',
        message: 'If-None-Match',
        times: 1,
        match: (r) => r.kind === 'PutObject',
      });
      await storage.putSmall(`app/${randomBytes(4).toString('hex')}.manifest.json`, '{}');
      expect(notices).toEqual([expect.stringMatching(/does not implement conditional writes/)]);
      const puts = proxy.requests.filter((r) => r.kind === 'PutObject').slice(-2);
      expect(puts.map((r) => [r.status, r.ifNoneMatch])).toEqual([
        [501, '*'],
        [200, undefined],
      ]);
    } finally {
      proxy.pass();
      storage.close();
    }
  });
});
