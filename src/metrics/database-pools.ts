/**
 * The metrics poller's connection pools: one for the database of DATABASE_URL (the server-wide
 * collectors, and pg_up), and one for each other database the per-database collectors poll, made
 * when first polled and dropped with the database. They only open connections (statement and lock
 * timeouts set, application_name pg-maintd): how many, whatever the database, is the budget's to
 * decide (connection-budget.ts).
 */
import { DbPool, type PoolSettings } from '../db/pool.js';
import type { Logger } from '../log/logger.js';

export interface DatabasePoolsOptions {
  db: PoolSettings;
  logger: Logger;
  /** METRICS_MAX_CONNECTIONS: the budget bounds the connections of every pool together. */
  max: number;
  statementTimeoutMs: number;
  lockTimeoutMs: number;
}

export class DatabasePools {
  /** The pool of the database of DATABASE_URL. */
  readonly main: DbPool;
  /** The database of DATABASE_URL, as it was at the start. */
  readonly mainDatabase: string;
  readonly #o: DatabasePoolsOptions;
  readonly #others = new Map<string, DbPool>();

  constructor(o: DatabasePoolsOptions) {
    this.#o = o;
    this.main = this.#newPool('metrics');
    this.mainDatabase = this.main.target.database;
  }

  /** The pool of `database`, made on first use. */
  of(database: string): DbPool {
    if (database === this.mainDatabase) return this.main;
    let pool = this.#others.get(database);
    if (!pool) {
      pool = this.#newPool(`metrics:${database}`, database);
      this.#others.set(database, pool);
    }
    return pool;
  }

  /** Every pool there is now (for pgmaintd_db_pool_clients). */
  all(): DbPool[] {
    return [this.main, ...this.#others.values()];
  }

  /** A database that is gone: its pool goes too. */
  drop(database: string): void {
    const pool = this.#others.get(database);
    this.#others.delete(database);
    void pool?.stop();
  }

  #newPool(name: string, database?: string): DbPool {
    const o = this.#o;
    return new DbPool(o.db, {
      name,
      ...(database ? { database } : {}),
      logger: o.logger,
      // the budget bounds the connections of every pool together
      max: o.max,
      min: 0,
      acquireTimeoutMs: o.statementTimeoutMs,
      statementTimeoutMs: o.statementTimeoutMs,
      lockTimeoutMs: o.lockTimeoutMs,
      queryTimeoutMs: o.statementTimeoutMs + 1000,
      applicationName: 'pg-maintd',
    });
  }
}
