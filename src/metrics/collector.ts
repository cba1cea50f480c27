/** What every collector is: a name, an interval, a scope, and a poll that refreshes its cached families. */
import type pg from 'pg';
import type { CollectorName } from '../config/fields.js';
import type { Logger } from '../log/logger.js';

export interface CollectorContext {
  /** A connection of the metrics pool, with statement_timeout and lock_timeout set. */
  client: pg.PoolClient;
  /** The database `client` is connected to. */
  database: string;
  /** server_version_num of the server, e.g. 150018, for version branches. */
  serverVersionNum: number;
  logger: Logger;
}

export interface Collector {
  /** The `collector` label of pg_scrape_collector_*, as postgres_exporter names it (METRICS_COLLECTORS). */
  readonly name: CollectorName;
  /** Poll interval; the poller's default when unset. */
  readonly intervalMs?: number;
  /**
   * 'server' (the default): polled once, in the database of DATABASE_URL (pg_stat_activity and the
   * like see the whole server). 'database': polled in each database of METRICS_DATABASES, because
   * what it reads (pg_stat_user_tables) only shows the database it is connected to.
   */
  readonly scope?: 'server' | 'database';
  /**
   * Queries the database and replaces the collector's cached series (for a 'database' collector:
   * the series of ctx.database, leaving the other databases' series as they are).
   */
  collect(ctx: CollectorContext): Promise<void>;
  /**
   * Drops the collector's series (after a failure, stale values are never served as fresh); for a
   * 'database' collector given a database, only that database's series.
   */
  clear(database?: string): void;
}
