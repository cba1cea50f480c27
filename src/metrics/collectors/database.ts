/**
 * Databases: pg_database_size_bytes and pg_database_connection_limit (collector "database", on its
 * own slower interval: sizes are costly with many databases), and pg_stat_database_* with
 * postgres_exporter's names and labels (collector "stat_database").
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

// Every database, as the reference reads them; pg_database_size() needs CONNECT on the database or
// pg_read_all_stats (in pg_monitor), so a database the role may not size gets no size, not an error.
const SIZE_SQL = `
  SELECT datname, datconnlimit AS connlimit,
         CASE WHEN has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE')
              THEN pg_database_size(oid) END AS size
    FROM pg_database`;

export class DatabaseCollector implements Collector {
  readonly name = 'database';
  readonly #size: CachedFamily<'datname'>;
  readonly #limit: CachedFamily<'datname'>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#size = new CachedFamily(registry, {
      name: 'pg_database_size_bytes',
      help: 'Disk space used by the database',
      type: 'gauge',
      labelNames: ['datname'],
    });
    this.#limit = new CachedFamily(registry, {
      name: 'pg_database_connection_limit',
      help: 'Connection limit set for the database',
      type: 'gauge',
      labelNames: ['datname'],
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const r = await client.query<{ datname: string; connlimit: number; size: string | null }>(SIZE_SQL);
    this.#size.replace(
      r.rows
        .filter((x) => x.size !== null)
        .map((x) => ({ labels: { datname: x.datname }, value: Number(x.size) })),
    );
    this.#limit.replace(r.rows.map((x) => ({ labels: { datname: x.datname }, value: x.connlimit })));
  }

  clear(): void {
    this.#size.clear();
    this.#limit.clear();
  }
}

/** pg_stat_database columns: the gauge, then the counters, named as postgres_exporter names them. */
const STAT_COLUMNS: Array<[column: string, type: 'gauge' | 'counter', help: string]> = [
  ['numbackends', 'gauge', 'Number of backends currently connected to this database.'],
  ['xact_commit', 'counter', 'Number of transactions in this database that have been committed'],
  ['xact_rollback', 'counter', 'Number of transactions in this database that have been rolled back'],
  ['blks_read', 'counter', 'Number of disk blocks read in this database'],
  ['blks_hit', 'counter', 'Number of times disk blocks were found already in the buffer cache'],
  ['tup_returned', 'counter', 'Number of rows returned by queries in this database'],
  ['tup_fetched', 'counter', 'Number of rows fetched by queries in this database'],
  ['tup_inserted', 'counter', 'Number of rows inserted by queries in this database'],
  ['tup_updated', 'counter', 'Number of rows updated by queries in this database'],
  ['tup_deleted', 'counter', 'Number of rows deleted by queries in this database'],
  ['conflicts', 'counter', 'Number of queries canceled due to conflicts with recovery in this database.'],
  ['temp_files', 'counter', 'Number of temporary files created by queries in this database.'],
  ['temp_bytes', 'counter', 'Total amount of data written to temporary files by queries in this database.'],
  ['deadlocks', 'counter', 'Number of deadlocks detected in this database'],
  [
    'blk_read_time',
    'counter',
    'Time spent reading data file blocks by backends in this database, in milliseconds',
  ],
  [
    'blk_write_time',
    'counter',
    'Time spent writing data file blocks by backends in this database, in milliseconds',
  ],
  ['stats_reset', 'counter', 'Time at which these statistics were last reset'],
];
/** From PostgreSQL 14. */
const ACTIVE_TIME: [string, 'counter', string] = [
  'active_time_seconds_total',
  'counter',
  'Time spent executing SQL statements in this database, in seconds',
];

function statSql(serverVersionNum: number): string {
  const columns = STAT_COLUMNS.map(([c]) =>
    c === 'stats_reset' ? 'coalesce(extract(epoch FROM stats_reset), 0) AS stats_reset' : c,
  );
  if (serverVersionNum >= 140000) columns.push('active_time / 1000.0 AS active_time_seconds_total');
  return `SELECT datid::text AS datid, datname, ${columns.join(', ')}
            FROM pg_stat_database WHERE datname IS NOT NULL`;
}

export class StatDatabaseCollector implements Collector {
  readonly name = 'stat_database';
  readonly #families: Array<[string, CachedFamily<'datid' | 'datname'>]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#families = [...STAT_COLUMNS, ACTIVE_TIME].map(([column, type, help]) => [
      column,
      new CachedFamily(registry, {
        name: `pg_stat_database_${column}`,
        help,
        type,
        labelNames: ['datid', 'datname'],
      }),
    ]);
  }

  async collect({ client, serverVersionNum }: CollectorContext): Promise<void> {
    const r = await client.query<Record<string, string>>(statSql(serverVersionNum));
    for (const [column, family] of this.#families) {
      family.replace(
        r.rows
          .filter((row) => row[column] !== undefined)
          .map((row) => ({
            labels: { datid: row.datid!, datname: row.datname! },
            value: Number(row[column]),
          })),
      );
    }
  }

  clear(): void {
    for (const [, f] of this.#families) f.clear();
  }
}
