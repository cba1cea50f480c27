/** What every collector is: a name, an interval, and a poll that refreshes its cached families. */
import type pg from 'pg';
import type { Logger } from '../log/logger.js';

export interface CollectorContext {
  /** A connection of the metrics pool, with statement_timeout and lock_timeout set. */
  client: pg.PoolClient;
  /** server_version_num of the server, e.g. 150018, for version branches. */
  serverVersionNum: number;
  logger: Logger;
}

export interface Collector {
  /** The `collector` label of pg_scrape_collector_*, as postgres_exporter names it. */
  readonly name: string;
  /** Poll interval; the poller's default when unset. */
  readonly intervalMs?: number;
  /** Queries the database and replaces the collector's cached series. */
  collect(ctx: CollectorContext): Promise<void>;
  /** Drops the collector's series (after a failure, stale values are never served as fresh). */
  clear(): void;
}
