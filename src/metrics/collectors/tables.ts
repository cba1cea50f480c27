/**
 * Table statistics (the seed guide's getTableSizes, and autovacuum health): pg_stat_user_tables_*
 * with postgres_exporter's names and labels {datname, schemaname, relname}, bounded to the largest
 * `limit` tables of each database (by the planner's estimate: see largest.ts) so the series stay few
 * and the poll cheap on a schema with thousands of tables.
 * pg_stat_user_tables only shows the database a session is connected to, so this collector is
 * polled in each database of METRICS_DATABASES.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';
import { RowsByDatabase, largestTables } from './largest.js';

type Label = 'datname' | 'schemaname' | 'relname';
const COLUMNS: Array<[column: string, type: 'gauge' | 'counter', help: string]> = [
  ['n_live_tup', 'gauge', 'Estimated number of live rows'],
  ['n_dead_tup', 'gauge', 'Estimated number of dead rows'],
  ['n_mod_since_analyze', 'gauge', 'Estimated number of rows changed since last analyze'],
  ['last_vacuum', 'gauge', 'Last time at which this table was manually vacuumed (not counting VACUUM FULL)'],
  ['last_autovacuum', 'gauge', 'Last time at which this table was vacuumed by the autovacuum daemon'],
  ['last_analyze', 'gauge', 'Last time at which this table was manually analyzed'],
  ['last_autoanalyze', 'gauge', 'Last time at which this table was analyzed by the autovacuum daemon'],
  [
    'vacuum_count',
    'counter',
    'Number of times this table has been manually vacuumed (not counting VACUUM FULL)',
  ],
  ['autovacuum_count', 'counter', 'Number of times this table has been vacuumed by the autovacuum daemon'],
  ['analyze_count', 'counter', 'Number of times this table has been manually analyzed'],
  ['autoanalyze_count', 'counter', 'Number of times this table has been analyzed by the autovacuum daemon'],
  ['seq_scan', 'counter', 'Number of sequential scans initiated on this table'],
  ['seq_tup_read', 'counter', 'Number of live rows fetched by sequential scans'],
  ['idx_scan', 'counter', 'Number of index scans initiated on this table'],
  ['idx_tup_fetch', 'counter', 'Number of live rows fetched by index scans'],
  ['n_tup_ins', 'counter', 'Number of rows inserted'],
  ['n_tup_upd', 'counter', 'Number of rows updated'],
  ['n_tup_hot_upd', 'counter', 'Number of rows HOT updated (i.e., with no separate index update required)'],
  ['n_tup_del', 'counter', 'Number of rows deleted'],
  ['table_size_bytes', 'gauge', 'Total disk space used by this table, in bytes'],
  ['index_size_bytes', 'gauge', 'Total disk space used by the indexes of this table, in bytes'],
];

const epoch = (c: string) => `coalesce(extract(epoch FROM ${c}), 0) AS ${c}`;
const SQL = `
  SELECT current_database() AS datname, schemaname, relname,
         n_live_tup, n_dead_tup, n_mod_since_analyze,
         ${epoch('last_vacuum')}, ${epoch('last_autovacuum')}, ${epoch('last_analyze')}, ${epoch('last_autoanalyze')},
         vacuum_count, autovacuum_count, analyze_count, autoanalyze_count,
         seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan, coalesce(idx_tup_fetch, 0) AS idx_tup_fetch,
         n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,
         -- exact, for the tables chosen only (the size functions open the table and stat() its files)
         pg_table_size(relid) AS table_size_bytes, pg_indexes_size(relid) AS index_size_bytes
    FROM pg_stat_user_tables t
   WHERE t.relid = ANY (${largestTables('$1')})`;

type Row = Record<string, string>;

export class TablesCollector implements Collector {
  readonly name = 'stat_user_tables';
  readonly scope = 'database';
  readonly #families: Array<[string, CachedFamily<Label>]>;
  /** The last rows of each database polled; the families serve their union. */
  readonly #rows = new RowsByDatabase<Row>();

  constructor(
    registry: Registry,
    private readonly opts: { limit: number; intervalMs?: number },
  ) {
    this.#families = COLUMNS.map(([column, type, help]) => [
      column,
      new CachedFamily<Label>(registry, {
        name: `pg_stat_user_tables_${column}`,
        help,
        type,
        labelNames: ['datname', 'schemaname', 'relname'],
      }),
    ]);
  }

  get intervalMs(): number | undefined {
    return this.opts.intervalMs;
  }

  async collect({ client, database }: CollectorContext): Promise<void> {
    const r = await client.query<Row>(SQL, [this.opts.limit]);
    this.#rows.set(database, r.rows);
    this.#publish();
  }

  clear(database?: string): void {
    this.#rows.clear(database);
    this.#publish();
  }

  #publish(): void {
    const rows = this.#rows.all();
    for (const [column, family] of this.#families) {
      family.replace(
        rows.map((row) => ({
          labels: { datname: row.datname!, schemaname: row.schemaname!, relname: row.relname! },
          value: Number(row[column]),
        })),
      );
    }
  }
}
