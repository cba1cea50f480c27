/**
 * pg_statio_user_tables_* {datname, schemaname, relname}: blocks read from disk and found in shared
 * buffers, for the heap, the indexes, the TOAST table and its index, as postgres_exporter's
 * "statio_user_tables" collector exports them (collector/pg_statio_user_tables.go; NULL, as for a
 * table without TOAST, read as 0 like the reference). Bounded like the table statistics: the largest
 * METRICS_TABLES_LIMIT tables of each database of METRICS_DATABASES, chosen by the same query
 * (largest.ts), so the same tables as pg_stat_user_tables_* and the two join (the reference exports
 * every table).
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';
import { RowsByDatabase, largestTables } from './largest.js';

type Label = 'datname' | 'schemaname' | 'relname';
const COLUMNS: Array<[column: string, metric: string, help: string]> = [
  ['heap_blks_read', 'heap_blocks_read', 'Number of disk blocks read from this table'],
  ['heap_blks_hit', 'heap_blocks_hit', 'Number of buffer hits in this table'],
  ['idx_blks_read', 'idx_blocks_read', 'Number of disk blocks read from all indexes on this table'],
  ['idx_blks_hit', 'idx_blocks_hit', 'Number of buffer hits in all indexes on this table'],
  [
    'toast_blks_read',
    'toast_blocks_read',
    "Number of disk blocks read from this table's TOAST table (if any)",
  ],
  ['toast_blks_hit', 'toast_blocks_hit', "Number of buffer hits in this table's TOAST table (if any)"],
  [
    'tidx_blks_read',
    'tidx_blocks_read',
    "Number of disk blocks read from this table's TOAST table indexes (if any)",
  ],
  ['tidx_blks_hit', 'tidx_blocks_hit', "Number of buffer hits in this table's TOAST table indexes (if any)"],
];

const SQL = `
  SELECT current_database() AS datname, schemaname, relname,
         ${COLUMNS.map(([c]) => c).join(', ')}
    FROM pg_statio_user_tables t
   WHERE t.relid = ANY (${largestTables('$1')})`;

type Row = Record<string, string | null>;

export class StatioTablesCollector implements Collector {
  readonly name = 'statio_user_tables';
  readonly scope = 'database';
  readonly #families: Array<[string, CachedFamily<Label>]>;
  readonly #rows = new RowsByDatabase<Row>();

  constructor(
    registry: Registry,
    private readonly opts: { limit: number; intervalMs?: number },
  ) {
    this.#families = COLUMNS.map(([column, metric, help]) => [
      column,
      new CachedFamily<Label>(registry, {
        name: `pg_statio_user_tables_${metric}`,
        help,
        type: 'counter',
        labelNames: ['datname', 'schemaname', 'relname'],
      }),
    ]);
  }

  get intervalMs(): number | undefined {
    return this.opts.intervalMs;
  }

  async collect({ client, database }: CollectorContext): Promise<void> {
    this.#rows.set(database, (await client.query<Row>(SQL, [this.opts.limit])).rows);
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
        rows.map((r) => ({
          labels: { datname: r.datname!, schemaname: r.schemaname!, relname: r.relname! },
          value: Number(r[column] ?? 0),
        })),
      );
    }
  }
}
