// Real errors from a real server, classified by SQLSTATE rather than by message text.
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { classify, explainConnectionError } from '../../src/db/sqlstate.js';
import { freePort } from '../../src/core/free-port.js';
import { useTestDatabase, withDatabase } from '../support/postgres.js';

const db = useTestDatabase();

async function errorOf(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

describe('SQLSTATE classification against a real server', () => {
  it('wrong password: auth_failed, not retryable, with a fix', async () => {
    const u = new URL(db.url);
    u.password = 'definitely-wrong';
    const err = await errorOf(() => withClient(u.toString(), async () => undefined));
    expect(classify(err)).toEqual({ kind: 'auth_failed', retryable: false, code: '28P01' });
    expect(explainConnectionError(err, 'x').hint).toMatch(/password/);
  });

  it('missing database: database_missing', async () => {
    const err = await errorOf(() =>
      withClient(withDatabase(db.url, 'no_such_db_here'), async () => undefined),
    );
    expect(classify(err)).toMatchObject({ kind: 'database_missing', code: '3D000', retryable: false });
  });

  it('nothing listening: connection_refused, retryable', async () => {
    const u = new URL(db.url);
    u.port = String(await freePort());
    const err = await errorOf(() => withClient(u.toString(), async () => undefined));
    expect(classify(err)).toMatchObject({ kind: 'connection_refused', retryable: true });
  });

  it('unknown host: host_unknown', async () => {
    const u = new URL(db.url);
    u.hostname = 'no-such-host.invalid';
    const err = await errorOf(() => withClient(u.toString(), async () => undefined));
    expect(classify(err).kind).toBe('host_unknown');
  });

  it('statement_timeout: query_canceled; lock_timeout: lock_timeout; both retryable or not as policy says', async () => {
    await db.pool.query('CREATE TABLE locked (id int)');
    const holder = await db.pool.connect();
    try {
      await holder.query('BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE');
      const lockErr = await errorOf(() =>
        withClient(db.url, async (c) => {
          await c.query("SET lock_timeout = '100ms'");
          await c.query('SELECT * FROM locked');
        }),
      );
      expect(classify(lockErr)).toEqual({ kind: 'lock_timeout', retryable: true, code: '55P03' });
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    const slowErr = await errorOf(() =>
      withClient(db.url, async (c) => {
        await c.query("SET statement_timeout = '50ms'");
        await c.query('SELECT pg_sleep(2)');
      }),
    );
    expect(classify(slowErr)).toMatchObject({ kind: 'query_canceled', code: '57014' });
  });

  it('permission denied, syntax error, unique violation, deadlock', async () => {
    await db.pool.query(
      `DROP ROLE IF EXISTS ${db.name}_ro; CREATE ROLE ${db.name}_ro LOGIN PASSWORD 'ro-pass'`,
    );
    await db.pool.query('CREATE TABLE private (id int primary key)');
    const u = new URL(db.url);
    u.username = `${db.name}_ro`;
    u.password = 'ro-pass';
    const denied = await errorOf(() => withClient(u.toString(), (c) => c.query('SELECT * FROM private')));
    expect(classify(denied)).toMatchObject({ kind: 'permission_denied', code: '42501' });

    const syntax = await errorOf(() => db.pool.query('SELEC 1'));
    expect(classify(syntax)).toMatchObject({ kind: 'syntax_error', code: '42601' });

    await db.pool.query('INSERT INTO private VALUES (1)');
    const dup = await errorOf(() => db.pool.query('INSERT INTO private VALUES (1)'));
    expect(classify(dup)).toMatchObject({ kind: 'integrity_violation', code: '23505', retryable: false });

    await db.pool.query('INSERT INTO private VALUES (2)');
    const a = await db.pool.connect();
    const b = await db.pool.connect();
    try {
      await a.query('BEGIN; UPDATE private SET id = id WHERE id = 1');
      await b.query('BEGIN; UPDATE private SET id = id WHERE id = 2');
      const results = await Promise.allSettled([
        a.query('UPDATE private SET id = id WHERE id = 2'),
        b.query('UPDATE private SET id = id WHERE id = 1'),
      ]);
      const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(classify(failed.reason)).toEqual({ kind: 'deadlock', retryable: true, code: '40P01' });
    } finally {
      await a.query('ROLLBACK');
      await b.query('ROLLBACK');
      a.release();
      b.release();
      await db.pool.query(`DROP OWNED BY ${db.name}_ro; DROP ROLE ${db.name}_ro`);
    }
  });

  it('a server-side disconnect: connection_lost, retryable', async () => {
    const victim = new pg.Client({ connectionString: db.url });
    await victim.connect();
    const errors: unknown[] = [];
    victim.on('error', (e) => errors.push(e));
    const pid = ((await victim.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number }).pid;
    await db.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    const err = await errorOf(() => victim.query('SELECT 1'));
    expect(classify(errors[0] ?? err)).toMatchObject({ kind: 'connection_lost', retryable: true });
    await victim.end().catch(() => undefined);
  });

  it('classifies Node socket codes and unknowns', () => {
    expect(classify(Object.assign(new Error('x'), { code: 'ECONNRESET' })).kind).toBe('connection_lost');
    expect(classify(Object.assign(new Error('x'), { code: '08006' })).kind).toBe('connection_lost');
    expect(classify(Object.assign(new Error('x'), { code: '53100' })).kind).toBe('insufficient_resources');
    expect(classify(new Error('Connection terminated unexpectedly')).kind).toBe('connection_lost');
    expect(classify('weird')).toEqual({ kind: 'unknown', retryable: false, code: undefined });
  });

  it('cannot_connect_now (57P03): a server starting up is starting; one shutting down is going away', () => {
    // the server's own texts for the two states, which a probe meets only in a short window
    const e = (message: string) => Object.assign(new Error(message), { code: '57P03' });
    expect(classify(e('the database system is starting up')).kind).toBe('server_starting');
    expect(classify(e('the database system is not yet accepting connections')).kind).toBe('server_starting');
    expect(classify(e('the database system is shutting down'))).toEqual({
      kind: 'connection_lost',
      retryable: true,
      code: '57P03',
    });
  });
});
