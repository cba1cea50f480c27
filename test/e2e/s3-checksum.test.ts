// S3_CHECKSUM against the real CLI and the test S3 server behind a proxy that checks SigV4 (so every
// header the SDK adds is signed and verified): with when_supported the SDK sends a CRC32 with every
// upload and asks for checksums on download, with when_required it sends none, and a backup is
// restored in both modes. Then a store that refuses the checksums, as Cloudflare R2 did when the SDK
// turned them on (3.729): the default for a custom S3_ENDPOINT works with it, and when_supported
// fails with an error that names S3_CHECKSUM as the fix.
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Storage } from '../../src/backup/storage/s3.js';
import { OperatorError } from '../../src/core/errors.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { runCli, startDaemon } from '../support/daemon.js';
import {
  carriesChecksum,
  on,
  startFaultProxy,
  type FaultProxy,
  type RequestKind,
} from '../support/fault-proxy.js';
import { createTestDatabase, useTestDatabase } from '../support/postgres.js';
import { s3CliEnv, startTestS3, type TestS3 } from '../support/s3.js';
import { seed } from '../support/seed.js';
import { startSigV4Proxy, type SigV4Proxy } from '../support/sigv4-proxy.js';

const db = useTestDatabase();
/** About 6 MB gzipped at level 1: two parts of 5 MiB, so the multipart requests are seen too. */
const BLOB_ROWS = 120_000;
const WRITES: RequestKind[] = ['PutObject', 'CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload'];

let s3: TestS3;
let sigv4: SigV4Proxy;
/** In front of the SigV4 proxy: emulates the store that refuses checksums, when told to. */
let refusing: FaultProxy;
const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };

beforeAll(async () => {
  await seed(db.pool, 10, 1);
  await db.pool.query(
    `CREATE TABLE blobs AS
       SELECT g AS id, encode(decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'), 'base64') AS payload
         FROM generate_series(1, ${BLOB_ROWS}) AS g`,
  );
  s3 = await startTestS3();
  sigv4 = await startSigV4Proxy({
    target: s3.endpoint,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
  });
  refusing = await startFaultProxy({ target: sigv4.url });
  // S3Storage built in this process takes its credentials from the SDK's default chain
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
});

afterAll(async () => {
  await refusing?.close();
  await sigv4?.close();
  await s3?.stop();
  if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
  else process.env.AWS_ACCESS_KEY_ID = saved.id;
  if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
  else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
});

function envFor(endpoint: string, bucket: string, extra: Record<string, string> = {}) {
  return s3CliEnv(s3, db.url, bucket, endpoint, {
    S3_PART_SIZE: '5MiB',
    BACKUP_COMPRESSION_LEVEL: '1',
    ...extra,
  });
}

async function storedKeys(bucket: string): Promise<string[]> {
  const r = await s3.client().send(new ListObjectsV2Command({ Bucket: bucket }));
  return (r.Contents ?? []).map((o) => o.Key!).sort();
}

async function countRows(url: string): Promise<{ blobs: number; users: number }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ blobs: number; users: number }>(
      'SELECT (SELECT count(*) FROM blobs)::int AS blobs, (SELECT count(*) FROM users)::int AS users',
    );
    return r.rows[0]!;
  } finally {
    await c.end();
  }
}

describe('S3_CHECKSUM through a proxy that checks every request’s SigV4 signature', () => {
  for (const mode of ['when_supported', 'when_required'] as const) {
    it(`${mode}: ${mode === 'when_supported' ? 'a CRC32 on every upload, checksums asked for on download' : 'no checksum on uploads or downloads'}; backup and restore work`, async () => {
      const bucket = await s3.createBucket(`pgmaintd-${mode.replace('_', '-')}`);
      const env = envFor(sigv4.url, bucket, { S3_CHECKSUM: mode });
      const target = await createTestDatabase('t_s3_checksum_restore');
      try {
        sigv4.clearLog();
        const backup = await runCli(['backup'], env);
        expect(backup.code, backup.out).toBe(0);
        const u = new URL(target.url);
        u.password = '';
        const restore = await runCli(['restore', '--latest', '--target-url', u.toString()], env);
        expect(restore.code, restore.out).toBe(0);
        expect(restore.out).toMatch(/checksum ok/);
        expect(await countRows(target.url)).toEqual(await countRows(db.url));
      } finally {
        await target.drop();
      }
      expect(sigv4.stats.refused).toEqual({}); // every request, checksum headers and all, was signed right

      const seen = sigv4.requests;
      const writes = seen.filter((r) => WRITES.includes(r.kind));
      const gets = seen.filter((r) => r.kind === 'GetObject');
      expect(seen.filter((r) => r.kind === 'UploadPart').length).toBeGreaterThanOrEqual(2);
      expect(gets.length).toBeGreaterThan(0);
      if (mode === 'when_supported') {
        // pg-maintd hands the SDK whole parts (Buffers), so the CRC32 travels as a header, not an
        // aws-chunked trailer
        for (const r of writes.filter((w) => w.kind === 'PutObject' || w.kind === 'UploadPart'))
          expect(r.headers, `${r.method} ${r.url}`).toMatchObject({
            'x-amz-sdk-checksum-algorithm': 'CRC32',
            'x-amz-checksum-crc32': expect.stringMatching(/^[A-Za-z0-9+/]{6}==$/),
          });
        for (const r of writes.filter((w) => w.kind === 'CreateMultipartUpload'))
          expect(r.headers['x-amz-checksum-algorithm']).toBe('CRC32');
        for (const r of gets) expect(r.headers['x-amz-checksum-mode']).toBe('ENABLED');
      } else {
        expect(writes.filter((r) => carriesChecksum(r.headers)).map((r) => r.url)).toEqual([]);
        expect(gets.filter((r) => r.headers['x-amz-checksum-mode'] !== undefined)).toEqual([]);
      }
    });
  }

  it('the daemon logs the mode in effect once at start', async () => {
    const bucket = await s3.createBucket('pgmaintd-checksum-log');
    const daemon = await startDaemon({ ...envFor(sigv4.url, bucket), LOG_LEVEL: 'info' });
    try {
      const lines = daemon.lines().filter((l) => l.msg.startsWith('S3 integrity checksums'));
      expect(lines.map((l) => [l.msg, l.s3Checksum])).toEqual([
        ['S3 integrity checksums: when_required (the default with S3_ENDPOINT)', 'when_required'],
      ]);
    } finally {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
  });
});

describe('a store that refuses the SDK’s checksums (emulated)', () => {
  // Emulated by the fault proxy: s3rver accepts the checksum headers. The answer is the one Cloudflare
  // R2 gave to every upload once the SDK sent checksums by default; other stores answer 400, or refuse
  // aws-chunked bodies with an x-amz-trailer. The proxy refuses all of these on uploads; downloads and
  // DeleteObjects (whose checksum the S3 API requires, in either mode) pass.
  const refuse = () =>
    refusing.status(501, {
      code: 'NotImplemented',
      message: "Header 'x-amz-checksum-crc32' with value 'NhCmhg==' not implemented",
      match: (r) => on.kind('PutObject', 'CreateMultipartUpload', 'UploadPart')(r) && on.checksummed()(r),
    });

  it('the default for a custom S3_ENDPOINT (when_required) backs up; when_supported fails naming S3_CHECKSUM, leaving nothing', async () => {
    const bucket = await s3.createBucket('pgmaintd-refusing');
    refuse();
    try {
      refusing.clearLog();
      const ok = await runCli(['backup'], envFor(refusing.url, bucket));
      expect(ok.code, ok.out).toBe(0);
      expect(refusing.faulted()).toBe(0);
      const kept = await storedKeys(bucket);
      expect(kept).toHaveLength(2); // the backup and its manifest

      const failed = await runCli(
        ['backup'],
        envFor(refusing.url, bucket, { S3_CHECKSUM: 'when_supported' }),
      );
      expect(failed.code, failed.out).toBe(EXIT.FAILURE); // a failed backup, whatever the reason
      expect(refusing.faulted()).toBeGreaterThan(0);
      expect(failed.out).toMatch(/NotImplemented \(HTTP 501\): Header 'x-amz-checksum-crc32'/);
      expect(failed.out).toMatch(/fix: .*set S3_CHECKSUM=when_required/);
      expect(failed.out).not.toMatch(/^\s+at /m); // an operator error, not a stack trace
      expect(await storedKeys(bucket)).toEqual(kept);
    } finally {
      refusing.pass();
    }
  });

  it('a refused checksum is not taken for a store without conditional writes', async () => {
    // Both answer 501 NotImplemented; mistaking this one would drop If-None-Match for nothing.
    const bucket = await s3.createBucket('pgmaintd-refusing-small');
    const storage = new S3Storage({
      bucket,
      prefix: '',
      region: s3.region,
      endpoint: refusing.url,
      forcePathStyle: true,
      maxAttempts: 1,
      checksum: 'when_supported',
    });
    const notices: string[] = [];
    storage.onNotice = (m) => notices.push(m);
    refuse();
    refusing.clearLog();
    try {
      const err = await storage.putSmall('app/x.manifest.json', '{}').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(OperatorError);
      expect((err as OperatorError).hint).toMatch(/S3_CHECKSUM=when_required/);
      expect(notices).toEqual([]);
      expect(refusing.requests.filter((r) => r.kind === 'PutObject').map((r) => r.ifNoneMatch)).toEqual([
        '*',
      ]);
    } finally {
      refusing.pass();
      storage.close();
    }
  });
});
