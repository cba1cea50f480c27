/**
 * The maintenance session: one dedicated connection to one database, outside any transaction block
 * (VACUUM and REINDEX CONCURRENTLY refuse to run inside one). Every statement is preceded by
 * `SET lock_timeout` and `SET statement_timeout`, so a role- or database-level setting cannot lift
 * the limits. An abort cancels the statement in flight with pg_cancel_backend from a second
 * connection.
 */
import type pg from 'pg';
import type { Config } from '../config/load.js';
import { DbPool } from '../db/pool.js';
import { classify, explainConnectionError } from '../db/sqlstate.js';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';

/** application_name of maintenance sessions, so they are easy to find in pg_stat_activity. */
export const MAINTENANCE_APPLICATION_NAME = 'pg-maintd maintenance';

export interface SessionLimits {
  lockTimeoutMs: number;
  /** 0: no limit. */
  statementTimeoutMs: number;
}

export class MaintenanceSession {
  private constructor(
    readonly database: string,
    readonly serverVersion: number,
    readonly pid: number,
    private readonly pool: DbPool,
    private readonly client: pg.PoolClient,
  ) {}

  static async open(
    db: Config['db'],
    database: string,
    limits: SessionLimits,
    logger: Logger,
  ): Promise<MaintenanceSession> {
    const pool = new DbPool(db, {
      name: `maintenance:${database}`,
      database,
      applicationName: MAINTENANCE_APPLICATION_NAME,
      max: 2, // the session, and a connection for pg_cancel_backend on abort
      min: 0,
      logger,
    });
    try {
      const client = await pool.connect();
      try {
        const r = await client.query<{ v: string; pid: number }>(
          "SELECT current_setting('server_version_num') AS v, pg_backend_pid() AS pid",
        );
        // once, for the session's life: after role and database settings, so they cannot lift them
        // (0, no limit, is sent too, which a connection option would leave out)
        // jit off: the catalog estimates (src/db/bloat-estimate.ts) look up pg_stats row by row, which
        // the planner costs high enough on a big schema to compile them, seconds for milliseconds of work
        await client.query(
          `SET lock_timeout = ${Math.trunc(limits.lockTimeoutMs)}; SET statement_timeout = ${Math.trunc(limits.statementTimeoutMs)}; SET jit = off`,
        );
        return new MaintenanceSession(database, Number(r.rows[0]!.v), r.rows[0]!.pid, pool, client);
      } catch (err) {
        client.release(true);
        throw err;
      }
    } catch (err) {
      await pool.stop();
      const { message, hint } = explainConnectionError(err, pool.description);
      const missing = classify(err).kind === 'database_missing';
      throw new OperatorError(message, {
        exitCode: EXIT.UNAVAILABLE,
        hint: missing
          ? 'create the database, or fix its name in MAINTENANCE_DATABASES (or --database)'
          : hint,
        cause: err,
      });
    }
  }

  /** A read (the plan's catalog queries). */
  async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
    return (await this.client.query<R>(text, values)).rows;
  }

  /** A maintenance statement, cancelled on the server when `signal` aborts. */
  async run(statement: string, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const cancel = () => {
      this.pool
        .query('SELECT pg_cancel_backend($1)', [this.pid])
        .catch(() => undefined /* the statement's own error tells the story */);
    };
    signal.addEventListener('abort', cancel, { once: true });
    try {
      await this.client.query(statement);
    } finally {
      signal.removeEventListener('abort', cancel);
    }
  }

  async close(): Promise<void> {
    this.client.release(true); // the pool ends with the run; nothing to return the connection to
    await this.pool.stop();
  }
}

/** Whether an error means the connection itself is gone (the run cannot go on). */
export function isConnectionLoss(err: unknown): boolean {
  const { kind } = classify(err);
  return kind === 'connection_lost' || kind === 'connection_refused' || kind === 'timeout';
}
