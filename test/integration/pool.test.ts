// The pool factory applies DB_POOL_* and per-connection settings on a real server.
import { describe, expect, it } from 'vitest';
import { DbPool } from '../../src/db/pool.js';
import { classify } from '../../src/db/sqlstate.js';
import { createLogger } from '../../src/log/logger.js';
import { useTestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/daemon.js';

const db = useTestDatabase();
const logger = createLogger({ level: 'silent', format: 'json' });

function make(
  pool: Partial<{ min: number; max: number; idleTimeoutMs: number; acquireTimeoutMs: number }>,
  extra = {},
) {
  return new DbPool(
    {
      url: db.url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 5, idleTimeoutMs: 30_000, acquireTimeoutMs: 5000, ...pool },
    },
    { name: 'test', logger, ...extra },
  );
}

describe('pool factory', () => {
  it('names its sessions and applies statement and lock timeouts', async () => {
    const p = make(
      {},
      { applicationName: 'pg-maintd-pooltest', statementTimeoutMs: 1234, lockTimeoutMs: 567 },
    );
    try {
      const r = await p.query<{ app: string; st: string; lt: string }>(
        "SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st, current_setting('lock_timeout') AS lt",
      );
      expect(r.rows[0]).toEqual({ app: 'pg-maintd-pooltest', st: '1234ms', lt: '567ms' });
      const err = await p.query('SELECT pg_sleep(3)').catch((e: unknown) => e);
      expect(classify(err).kind).toBe('query_canceled');
    } finally {
      await p.stop();
    }
  });

  it('opens at most DB_POOL_MAX connections; further callers wait, then time out at the acquire timeout', async () => {
    const p = make({ max: 2, acquireTimeoutMs: 300 });
    try {
      const a = await p.connect();
      const b = await p.connect();
      expect(p.stats()).toEqual({ total: 2, idle: 0, waiting: 0 });
      const waiting = p.connect();
      await waitFor(
        async () => p.stats().waiting,
        (w) => w === 1,
        2000,
        10,
      );
      const err = await waiting.catch((e: unknown) => e);
      expect(String(err)).toMatch(/timeout/i);
      expect(classify(err).kind).toBe('timeout');
      a.release();
      b.release();
      const count = await p.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pg-maintd'",
      );
      expect(Number(count.rows[0]!.n)).toBeLessThanOrEqual(2);
    } finally {
      await p.stop();
    }
  });

  it('closes idle connections after the idle timeout, down to DB_POOL_MIN', async () => {
    const p = make({ min: 1, max: 4, idleTimeoutMs: 100 });
    try {
      const clients = await Promise.all([p.connect(), p.connect(), p.connect()]);
      for (const c of clients) c.release();
      expect(p.stats().total).toBe(3);
      await waitFor(
        async () => p.stats().total,
        (t) => t === 1,
        5000,
        50,
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(p.stats().total).toBe(1); // min is kept
    } finally {
      await p.stop();
    }
  });

  it('stop() closes every connection and is safe to call twice', async () => {
    const p = make({ max: 3 });
    await Promise.all([p.query('SELECT 1'), p.query('SELECT 1'), p.query('SELECT 1')]);
    await Promise.all([p.stop(), p.stop()]);
    await p.stop();
    expect(p.stats().total).toBe(0);
    // the server ends a backend after it reads the client's Terminate, a moment after stop() returns
    const left = async () =>
      Number(
        (
          await db.pool.query<{ n: string }>(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pg-maintd'",
          )
        ).rows[0]!.n,
      );
    let n = await left();
    for (const until = Date.now() + 10_000; n > 0 && Date.now() < until; n = await left())
      await new Promise((r) => setTimeout(r, 50));
    expect(n).toBe(0);
  });

  it('survives a server-side kill of an idle connection without crashing the process', async () => {
    const p = make({ max: 1 }, { applicationName: 'pg-maintd-victim' });
    try {
      await p.query('SELECT 1');
      await db.pool.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg-maintd-victim'",
      );
      await waitFor(
        async () => p.stats().total,
        (t) => t === 0,
        5000,
        20,
      );
      expect((await p.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
    } finally {
      await p.stop();
    }
  });
});
