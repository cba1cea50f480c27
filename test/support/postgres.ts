/**
 * Per-file helpers of the PostgreSQL harness: each test file gets its own database (useTestDatabase),
 * so files run in parallel; tests that stop the server for real get a private cluster.
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import { LocalCluster } from '../../src/embedded/local-cluster.js';

/** The private clusters this file started (stop() removes one's folder; reap.ts stops those left). */
const clusters = new Set<LocalCluster>();

/** A cluster this test file owns, for tests that stop and restart the server for real. */
export async function startPrivateCluster(
  opts: ConstructorParameters<typeof LocalCluster>[0] = {},
): Promise<LocalCluster> {
  const cluster = new LocalCluster(opts);
  clusters.add(cluster);
  await cluster.start();
  return cluster;
}

/** Stops the private clusters this file left running; how many there were. */
export async function stopPrivateClusters(): Promise<number> {
  const left = [...clusters].filter((c) => c.running);
  clusters.clear();
  await Promise.allSettled(left.map((c) => c.stop()));
  return left.length;
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
/** Creates a database of its own on the harness's server; drop() removes it (sessions and all). */
export async function createTestDatabase(
  prefix: string,
): Promise<TestDatabase & { drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(3).toString('hex')}`.toLowerCase();
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: adminUrl() });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  const url = withDatabase(adminUrl(), name);
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  // the DROP ... WITH (FORCE) below may terminate a session pool.end() has not closed yet: the pool
  // then emits the FATAL as an 'error', which would be thrown with no listener
  pool.on('error', () => undefined);
  return {
    name,
    url,
    pool,
    drop: async () => {
      await pool.end();
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

export function useTestDatabase(label = 'db'): TestDatabase {
  const db = {} as TestDatabase;
  let drop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const file = basename(expect.getState().testPath ?? label)
      .replace(/\W+/g, '_')
      .slice(0, 30);
    const created = await createTestDatabase(`t_${file}`);
    Object.assign(db, { name: created.name, url: created.url, pool: created.pool });
    drop = created.drop;
  });
  afterAll(async () => {
    await drop?.();
  });
  return db;
}

export interface OwnedDatabase {
  name: string;
  role: string;
  password: string;
  /** postgresql://role:password@.../name */
  url: string;
  /** A client on it as the superuser, for arranging (subscriptions, settings). */
  admin(sql: string): Promise<void>;
  drop(): Promise<void>;
}

/**
 * A database owned by a role of its own (not a superuser, CREATEDB for drills), as the README's
 * least-privilege deployment has it; `roleSql` runs as the superuser after the role exists (e.g.
 * ALTER ROLE ... SET statement_timeout).
 */
export async function createOwnedDatabase(prefix: string): Promise<OwnedDatabase> {
  const suffix = randomBytes(3).toString('hex');
  const role = `${prefix}_r_${suffix}`;
  const name = `${prefix}_${suffix}`;
  const password = `pw-${randomBytes(9).toString('base64url')}`;
  const on = async (database: string | undefined, sql: string) => {
    const c = new pg.Client({ connectionString: database ? withDatabase(adminUrl(), database) : adminUrl() });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await on(undefined, `CREATE ROLE ${role} LOGIN CREATEDB PASSWORD '${password}'`);
  await on(undefined, `CREATE DATABASE ${name} OWNER ${role}`);
  const u = new URL(withDatabase(adminUrl(), name));
  u.username = role;
  u.password = password;
  return {
    name,
    role,
    password,
    url: u.toString(),
    admin: (sql) => on(name, sql),
    async drop() {
      await on(undefined, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await on(undefined, `DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
    },
  };
}

/** Runs each statement on its own (CREATE DATABASE cannot share a transaction); the last one's result. */
export async function sqlEach(url: string, text: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    let r!: pg.QueryResult;
    for (const s of text.split(/;\s*/)) if (s.trim()) r = await c.query(s);
    return r;
  } finally {
    await c.end();
  }
}
