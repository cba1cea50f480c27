/**
 * Index usage, for finding unused indexes: pg_stat_user_indexes_idx_scan_total, _idx_tup_read,
 * _idx_tup_fetch (counters) and _last_idx_scan_time (Unix seconds, PostgreSQL 16+, absent for an
 * index never scanned), with pg_index_size_bytes beside them, labelled {datname, schemaname, relname,
 * indexrelname}. postgres_exporter has no released collector for this: the names and labels are those
 * of its proposed "stat_user_indexes" (and "pg_index") collectors, disabled by default as there, so
 * dashboards written for them work. Unlike that proposal, an index never scanned is exported (with
 * idx_scan_total 0: the very series this is for) and last_idx_scan_time is a gauge (a timestamp).
 *
 * Off unless METRICS_COLLECTOR_INTERVALS names it (`stat_user_indexes=5m`); bounded to the largest
 * METRICS_TABLES_LIMIT indexes of each database of METRICS_DATABASES (an unused index costs in
 * proportion to its size), by the planner's estimate (pg_class.relpages, see largest.ts).
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';
import { RowsByDatabase, largestIndexes } from './largest.js';

type Label = 'datname' | 'schemaname' | 'relname' | 'indexrelname';
const LABELS: Label[] = ['datname', 'schemaname', 'relname', 'indexrelname'];

const FAMILIES: Array<[column: string, name: string, type: 'counter' | 'gauge', help: string]> = [
  ['idx_scan', 'pg_stat_user_indexes_idx_scan_total', 'counter', 'Number of scans for this index'],
  ['idx_tup_read', 'pg_stat_user_indexes_idx_tup_read', 'counter', 'Number of tuples read for this index'],
  ['idx_tup_fetch', 'pg_stat_user_indexes_idx_tup_fetch', 'counter', 'Number of tuples fetch for this index'],
  [
    'last_idx_scan',
    'pg_stat_user_indexes_last_idx_scan_time',
    'gauge',
    'Last timestamp of scan for this index',
  ],
  ['size', 'pg_index_size_bytes', 'gauge', 'Size of the index in bytes'],
];

const sql = (lastScan: boolean) => `
  SELECT current_database() AS datname, schemaname, relname, indexrelname,
         idx_scan, idx_tup_read, idx_tup_fetch,
         ${lastScan ? 'extract(epoch FROM last_idx_scan)' : 'NULL'} AS last_idx_scan,
         -- exact, for the indexes chosen only
         pg_relation_size(indexrelid) AS size
    FROM pg_stat_user_indexes i
   WHERE i.indexrelid = ANY (${largestIndexes('$1')})`;

type Row = Record<string, string | null>;

export class StatUserIndexesCollector implements Collector {
  readonly name = 'stat_user_indexes';
  readonly scope = 'database';
  readonly #families: Array<[string, CachedFamily<Label>]>;
  readonly #rows = new RowsByDatabase<Row>();

  constructor(
    registry: Registry,
    private readonly opts: { limit: number; intervalMs?: number },
  ) {
    this.#families = FAMILIES.map(([column, name, type, help]) => [
      column,
      new CachedFamily<Label>(registry, { name, help, type, labelNames: LABELS }),
    ]);
  }

  get intervalMs(): number | undefined {
    return this.opts.intervalMs;
  }

  async collect({ client, database, serverVersionNum }: CollectorContext): Promise<void> {
    const r = await client.query<Row>(sql(serverVersionNum >= 160000), [this.opts.limit]);
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
        rows
          .filter((r) => r[column] !== null)
          .map((r) => ({
            labels: {
              datname: r.datname!,
              schemaname: r.schemaname!,
              relname: r.relname!,
              indexrelname: r.indexrelname!,
            },
            value: Number(r[column]),
          })),
      );
    }
  }
}
