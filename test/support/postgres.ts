/**
 * Per-file helpers of the PostgreSQL harness: each test file gets its own database (useTestDatabase),
 * so files run in parallel; tests that stop the server for real get a private cluster.
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import { LocalCluster } from '../../src/embedded/local-cluster.js';

/** A cluster this test file owns, for tests that stop and restart the server for real. */
export async function startPrivateCluster(
  opts: ConstructorParameters<typeof LocalCluster>[0] = {},
): Promise<LocalCluster> {
  const cluster = new LocalCluster(opts);
  await cluster.start();
  return cluster;
}

export function adminUrl(): string {
  return inject('pgAdminUrl');
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export interface TestDatabase {
  name: string;
  url: string;
  /** A small pool on the test database, for arranging and asserting. */
  pool: pg.Pool;
}

/**
 * Creates a database for this test file before its tests and drops it after them.
 * Use the returned object's fields inside tests (they are set by beforeAll).
 */
export function useTestDatabase(label = 'db'): TestDatabase {
  const db = {} as TestDatabase;
  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    const file = basename(expect.getState().testPath ?? label)
      .replace(/\W+/g, '_')
      .slice(0, 30);
    db.name = `t_${file}_${randomBytes(3).toString('hex')}`.toLowerCase();
    try {
      await admin.query(`CREATE DATABASE ${db.name}`);
    } finally {
      await admin.end();
    }
    db.url = withDatabase(adminUrl(), db.name);
    db.pool = new pg.Pool({ connectionString: db.url, max: 4 });
  });
  afterAll(async () => {
    await db.pool?.end();
    if (!db.name) return;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${db.name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  });
  return db;
}
