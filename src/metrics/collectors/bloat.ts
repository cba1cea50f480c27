/**
 * Table and btree bloat estimates under the names and labels of the custom queries that
 * awesome-prometheus-alerts' bloat rules read (the ioguix queries its rules link to, as
 * `pg_bloat_table` and `pg_bloat_btree`): pg_bloat_table_bloat_pct / _real_size {schemaname, relname} and
 * pg_bloat_btree_bloat_pct / _real_size {schemaname, relname, idxname}, where the rules join on
 * relname and idxname (`pg_bloat_btree_bloat_pct > 80 and on (idxname) (pg_bloat_btree_real_size >
 * 100000000)`), plus `datname`, since this collector polls each database of METRICS_DATABASES.
 *
 * The estimates are the maintenance job's (src/db/bloat-estimate.ts): catalogs and pg_stats only, no
 * lock, no I/O, but estimates, and said so in HELP. Bounded to the largest METRICS_TABLES_LIMIT
 * tables and as many indexes of each database, and polled on a slower interval of their own (5 m):
 * the sizes and statistics they read move slowly.
 */
import type { Registry } from 'prom-client';
import { btreeBloatSql, tableBloatSql, userSchema } from '../../db/bloat-estimate.js';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

export const BLOAT_INTERVAL_MS = 5 * 60_000;

const SCOPE = { permitted: 'true', schemas: userSchema('n.nspname') };
const BTREE_SQL = btreeBloatSql(SCOPE);
const TABLE_SQL = tableBloatSql(SCOPE);

type TableLabel = 'datname' | 'schemaname' | 'relname';
type IndexLabel = TableLabel | 'idxname';
interface Rows {
  tables: Array<{ schema: string; name: string; size_bytes: string; ratio: number }>;
  indexes: Array<{ schema: string; table: string; name: string; size_bytes: string; ratio: number }>;
}

export class BloatCollector implements Collector {
  readonly name = 'bloat';
  readonly scope = 'database';
  readonly #tablePct: CachedFamily<TableLabel>;
  readonly #tableSize: CachedFamily<TableLabel>;
  readonly #btreePct: CachedFamily<IndexLabel>;
  readonly #btreeSize: CachedFamily<IndexLabel>;
  readonly #rows = new Map<string, Rows>();

  constructor(
    registry: Registry,
    private readonly opts: { limit: number; intervalMs?: number },
  ) {
    const table = ['datname', 'schemaname', 'relname'] as const;
    const index = [...table, 'idxname'] as const;
    this.#tablePct = new CachedFamily(registry, {
      name: 'pg_bloat_table_bloat_pct',
      help: 'Estimated share of the table (heap and TOAST) beyond what its rows need at its fillfactor, in percent: an estimate from pg_class and pg_stats, not a measure.',
      type: 'gauge',
      labelNames: table,
    });
    this.#tableSize = new CachedFamily(registry, {
      name: 'pg_bloat_table_real_size',
      help: 'Size of the table (heap and TOAST pages, as of its last VACUUM or ANALYZE), in bytes, the base of the bloat estimate.',
      type: 'gauge',
      labelNames: table,
    });
    this.#btreePct = new CachedFamily(registry, {
      name: 'pg_bloat_btree_bloat_pct',
      help: 'Estimated share of the btree index beyond what a rebuild at its fillfactor would fill, in percent: an estimate from pg_class and pg_stats, not a measure.',
      type: 'gauge',
      labelNames: index,
    });
    this.#btreeSize = new CachedFamily(registry, {
      name: 'pg_bloat_btree_real_size',
      help: 'Size of the btree index (pages as of its last VACUUM or ANALYZE), in bytes, the base of the bloat estimate.',
      type: 'gauge',
      labelNames: index,
    });
  }

  get intervalMs(): number {
    return this.opts.intervalMs ?? BLOAT_INTERVAL_MS;
  }

  async collect({ client, database }: CollectorContext): Promise<void> {
    // jit off for these two only (SET LOCAL, so the pooled connection keeps its settings): they look up
    // pg_stats row by row, which the planner may cost high enough to compile, seconds for milliseconds
    await client.query('BEGIN READ ONLY');
    await client.query('SET LOCAL jit = off');
    const tables = (await client.query<Rows['tables'][number]>(TABLE_SQL, [this.opts.limit])).rows;
    const indexes = (await client.query<Rows['indexes'][number]>(BTREE_SQL, [0, 0, null, this.opts.limit]))
      .rows;
    await client.query('COMMIT'); // on a failure the poller discards the connection, transaction and all
    this.#rows.set(database, { tables, indexes });
    this.#publish();
  }

  clear(database?: string): void {
    if (database === undefined) this.#rows.clear();
    else this.#rows.delete(database);
    this.#publish();
  }

  #publish(): void {
    const all = [...this.#rows].map(([datname, r]) => ({ datname, ...r }));
    const tables = all.flatMap((d) =>
      d.tables.map((t) => ({ labels: { datname: d.datname, schemaname: t.schema, relname: t.name }, t })),
    );
    const indexes = all.flatMap((d) =>
      d.indexes.map((i) => ({
        labels: { datname: d.datname, schemaname: i.schema, relname: i.table, idxname: i.name },
        i,
      })),
    );
    this.#tablePct.replace(tables.map(({ labels, t }) => ({ labels, value: 100 * Number(t.ratio) })));
    this.#tableSize.replace(tables.map(({ labels, t }) => ({ labels, value: Number(t.size_bytes) })));
    this.#btreePct.replace(indexes.map(({ labels, i }) => ({ labels, value: 100 * Number(i.ratio) })));
    this.#btreeSize.replace(indexes.map(({ labels, i }) => ({ labels, value: Number(i.size_bytes) })));
  }
}
