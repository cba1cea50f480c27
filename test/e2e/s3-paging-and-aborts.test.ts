// Two S3 behaviours the test store (s3rver) lacks, served by the fault proxy in front of it
// (test/support/s3-emulation.ts says how): ListObjectsV2 pages past 1,000 keys, and multipart
// uploads that can be listed and aborted. Against MinIO or TEST_S3_ENDPOINT the store's own are used.
// (A truncated listing without a continuation token is refused: listings-and-clusters.test.ts.)
import {
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../support/daemon.js';
import { craftBackup } from '../support/crafted-backup.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { useTestDatabase } from '../support/postgres.js';
import { s3CliEnv, startTestS3, type TestS3 } from '../support/s3.js';
import { seed } from '../support/seed.js';

const db = useTestDatabase();
const DAY = 86_400_000;
/** About 6 MB gzipped at level 1: a multipart upload of two 5 MiB parts. */
const BLOB_ROWS = 120_000;
const FILLERS = 2500;

let s3: TestS3;
let proxy: FaultProxy;
let viaProxy: S3Client;

beforeAll(async () => {
  await seed(db.pool, 10, 1);
  await db.pool.query(
    `CREATE TABLE blobs AS
       SELECT g AS id, encode(decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'), 'base64') AS payload
         FROM generate_series(1, ${BLOB_ROWS}) AS g`,
  );
  s3 = await startTestS3();
  proxy = await startFaultProxy({ target: s3.endpoint });
  if (s3.provider === 's3rver') {
    proxy.pageListings(1000); // S3's page size
    proxy.trackUploads(true);
  }
  viaProxy = new S3Client({
    endpoint: proxy.url,
    region: s3.region,
    forcePathStyle: true,
    maxAttempts: 1,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
});

afterAll(async () => {
  viaProxy?.destroy();
  await proxy?.close();
  await s3?.stop();
});

beforeEach(() => {
  proxy.pass();
  proxy.clearLog();
});

function envFor(bucket: string, extra: Record<string, string> = {}) {
  return s3CliEnv(s3, db.url, bucket, proxy.url, {
    S3_PART_SIZE: '5MiB',
    BACKUP_COMPRESSION_LEVEL: '1',
    ...extra,
  });
}

describe('a listing of more than 1,000 keys', () => {
  it('is followed page by page: retention finds and deletes an old backup behind 2,500 other objects', async () => {
    const bucket = await s3.createBucket('pgmaintd-pages');
    const direct = s3.client();
    // Objects that are not backups, under the database's folder, sorting before every backup key:
    // the backups are only on the third page.
    const fillers = Array.from(
      { length: FILLERS },
      (_, i) => `${db.name}/0-other-${String(i).padStart(5, '0')}`,
    );
    for (let i = 0; i < fillers.length; i += 100)
      await Promise.all(
        fillers
          .slice(i, i + 100)
          .map((Key) => direct.send(new PutObjectCommand({ Bucket: bucket, Key, Body: 'x' }))),
      );
    const old = craftBackup(db.name, 'SELECT 1;\n', { at: new Date(Date.now() - 40 * DAY) });
    await direct.send(new PutObjectCommand({ Bucket: bucket, Key: old.key, Body: old.bytes }));
    await direct.send(
      new PutObjectCommand({ Bucket: bucket, Key: `${old.key}.manifest.json`, Body: old.manifestText }),
    );

    const env = envFor(bucket, { BACKUP_RETENTION_DAYS: '30', BACKUP_RETENTION_MIN_COUNT: '1' });
    const before = await runCli(['backups', 'list', '--json'], env);
    expect(before.code, before.out).toBe(0);
    expect(
      (JSON.parse(before.out) as Array<{ backups: Array<{ key: string }> }>)[0]!.backups.map((b) => b.key),
    ).toEqual([old.key]);
    // 2,502 keys: pages of 1,000, 1,000 and 502, each asked for with the token of the one before
    const pages = proxy.requests.filter((r) => r.kind === 'ListObjectsV2');
    expect(pages.map((r) => new URL(r.url, 'http://x').searchParams.has('continuation-token'))).toEqual([
      false,
      true,
      true,
    ]);
    expect(pages.every((r) => r.status === 200)).toBe(true);

    // a new backup, then retention: the old one (on the third page) is deleted, the others stay
    const backup = await runCli(['backup'], env);
    expect(backup.code, backup.out).toBe(0);
    const after = JSON.parse((await runCli(['backups', 'list', '--json'], env)).out) as Array<{
      backups: Array<{ key: string }>;
    }>;
    expect(after[0]!.backups).toHaveLength(1);
    expect(after[0]!.backups[0]!.key).not.toBe(old.key);

    const left: string[] = [];
    let token: string | undefined;
    do {
      const r = await viaProxy.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: `${db.name}/`, ContinuationToken: token }),
      );
      left.push(...(r.Contents ?? []).map((o) => o.Key!));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    expect(left).toHaveLength(FILLERS + 2); // the others, the new backup and its manifest
    expect(left).not.toContain(old.key);
    expect(left.filter((k) => k.startsWith(`${db.name}/0-other-`))).toEqual(fillers);
  });
});

describe('a backup whose upload fails', () => {
  const openUploads = async (bucket: string) =>
    (await viaProxy.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [];

  it('aborts its multipart upload: the store no longer lists it', async () => {
    const bucket = await s3.createBucket('pgmaintd-aborts');
    // the listing shows an upload left open (what a failed backup must not leave)
    const started = await viaProxy.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'left/open' }),
    );
    expect((await openUploads(bucket)).map((u) => u.UploadId)).toEqual([started.UploadId]);

    // the second part fails (no retry): the upload cannot complete
    proxy.status(500, { match: (r) => r.kind === 'UploadPart' && r.partNumber === 2 });
    const failed = await runCli(['backup'], envFor(bucket));
    expect(failed.code, failed.out).toBe(1);
    expect(failed.out).toMatch(/InternalError \(HTTP 500\)/);

    const created = proxy.requests.filter((r) => r.kind === 'CreateMultipartUpload' && r.status === 200);
    expect(created).toHaveLength(2); // the one above and the backup's
    const aborts = proxy.requests.filter((r) => r.kind === 'AbortMultipartUpload');
    expect(aborts.length).toBeGreaterThanOrEqual(1);
    expect(aborts[0]!.status).toBe(204);
    const backupUpload = proxy.requests.find((r) => r.kind === 'UploadPart')!.uploadId;
    expect(aborts.every((r) => r.uploadId === backupUpload)).toBe(true);
    // only the upload this test left open is listed; nothing is stored under the backup's prefix
    expect((await openUploads(bucket)).map((u) => u.Key)).toEqual(['left/open']);
    const stored = await viaProxy.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${db.name}/` }));
    expect(stored.Contents ?? []).toEqual([]);
  });
});
