/**
 * Databases: pg_database_size_bytes and pg_database_connection_limit (collector "database", on its
 * own slower interval: sizes are costly with many databases), and pg_stat_database_* with
 * postgres_exporter's names and labels (collector "stat_database").
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SIZE_SQL = `
  SELECT datname, datconnlimit AS connlimit, pg_database_size(oid) AS size
    FROM pg_database WHERE datallowconn AND NOT datistemplate`;

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
    const r = await client.query<{ datname: string; connlimit: number; size: string }>(SIZE_SQL);
    this.#size.replace(r.rows.map((x) => ({ labels: { datname: x.datname }, value: Number(x.size) })));
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
];

const STAT_SQL = `
  SELECT datid::text AS datid, datname, ${STAT_COLUMNS.map(([c]) => c).join(', ')}
    FROM pg_stat_database WHERE datname IS NOT NULL`;

export class StatDatabaseCollector implements Collector {
  readonly name = 'stat_database';
  readonly #families: Array<[string, CachedFamily<'datid' | 'datname'>]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#families = STAT_COLUMNS.map(([column, type, help]) => [
      column,
      new CachedFamily(registry, {
        name: `pg_stat_database_${column}`,
        help,
        type,
        labelNames: ['datid', 'datname'],
      }),
    ]);
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const r = await client.query<Record<string, string>>(STAT_SQL);
    for (const [column, family] of this.#families) {
      family.replace(
        r.rows.map((row) => ({
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
