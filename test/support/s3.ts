/**
 * The S3 side of the harness. The first provider that applies wins:
 *   1. TEST_S3_ENDPOINT (with TEST_S3_ACCESS_KEY_ID, TEST_S3_SECRET_ACCESS_KEY, TEST_S3_REGION);
 *   2. a Docker engine: testcontainers' MinIO module;
 *   3. s3rver (npm) on 127.0.0.1, storing in a temp folder.
 * s3rver does not check signatures; tests of rejected credentials use a fault proxy instead.
 */
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { S3Storage } from '../../src/backup/storage/s3.js';
import { cliEnv } from './daemon.js';
import { dockerEngineAnswers } from './docker.js';
import { tempDir } from './temp.js';

export interface TestS3 {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  provider: 'env' | 'testcontainers' | 's3rver';
  client(): S3Client;
  /** Creates a bucket with a unique name and returns the name. */
  createBucket(prefix?: string): Promise<string>;
  stop(): Promise<void>;
}

/** Storage straight on the test store (never through a fault proxy), one attempt per request. */
export function directStorage(s3: TestS3, bucket: string): S3Storage {
  return new S3Storage({
    bucket,
    prefix: '',
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    maxAttempts: 1,
  });
}

/**
 * The environment of a CLI or daemon that backs up `dbUrl` into `bucket` through `endpoint` (the
 * store itself, or a proxy in front of it), with the test store's credentials and one attempt per
 * request; BACKUP_DIR points at a fresh folder nothing should be written to.
 */
export function s3CliEnv(
  s3: TestS3,
  dbUrl: string,
  bucket: string,
  endpoint: string,
  extra: Record<string, string> = {},
) {
  return cliEnv(dbUrl, tempDir('pgmaintd-unused-'), {
    LOG_LEVEL: 'warn',
    S3_BUCKET: bucket,
    S3_ENDPOINT: endpoint,
    S3_REGION: s3.region,
    S3_FORCE_PATH_STYLE: 'true',
    S3_MAX_ATTEMPTS: '1',
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    ...extra,
  });
}

export async function startTestS3(): Promise<TestS3> {
  if (process.env.TEST_S3_ENDPOINT) {
    return make(
      {
        endpoint: process.env.TEST_S3_ENDPOINT,
        region: process.env.TEST_S3_REGION ?? 'us-east-1',
        accessKeyId: process.env.TEST_S3_ACCESS_KEY_ID ?? '',
        secretAccessKey: process.env.TEST_S3_SECRET_ACCESS_KEY ?? '',
      },
      'env',
      async () => undefined,
    );
  }
  if (await dockerEngineAnswers()) {
    const { MinioContainer } = await import('@testcontainers/minio');
    const c = await new MinioContainer('minio/minio:latest').start();
    return make(
      {
        endpoint: c.getConnectionUrl(),
        region: 'us-east-1',
        accessKeyId: c.getUsername(),
        secretAccessKey: c.getPassword(),
      },
      'testcontainers',
      async () => void (await c.stop()),
    );
  }
  const { default: S3rver } = await import('s3rver');
  const directory = tempDir('pgmaintd-s3-');
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory });
  const addr = (await server.run()) as { port: number };
  return make(
    {
      endpoint: `http://127.0.0.1:${addr.port}`,
      region: 'us-east-1',
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
    },
    's3rver',
    async () => {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  );
}

function make(
  c: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string },
  provider: TestS3['provider'],
  stop: () => Promise<void>,
): TestS3 {
  const clients: S3Client[] = [];
  const client = () => {
    const s3 = new S3Client({
      endpoint: c.endpoint,
      region: c.region,
      forcePathStyle: true,
      credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
    });
    clients.push(s3);
    return s3;
  };
  return {
    ...c,
    provider,
    client,
    async createBucket(prefix = 'pgmaintd-test') {
      const name = `${prefix}-${randomBytes(4).toString('hex')}`;
      await client().send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    async stop() {
      for (const s3 of clients) s3.destroy();
      await stop();
    },
  };
}
