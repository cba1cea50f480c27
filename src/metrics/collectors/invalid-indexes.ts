/**
 * Invalid indexes, one series each, as the maintenance job finds them (src/db/invalid-indexes.ts):
 * leftovers of a failed REINDEX CONCURRENTLY (`_ccnew`, `_ccold`) and of a failed CREATE INDEX
 * CONCURRENTLY. Queries never use them, but every write still maintains them.
 *
 * pg_general_index_info_pg_relation_size {schemaname, relname, indexrelname} is the name
 * awesome-prometheus-alerts' "Postgresql invalid index" rule reads
 * (`pg_general_index_info_pg_relation_size{indexrelname=~".*ccnew.*"}`, a custom query there that
 * lists every index); here it lists invalid indexes only, so the copied rule works and the series
 * stay few. pgmaintd_invalid_index_info adds whether the index is a _ccnew/_ccold leftover (the
 * maintenance job drops those) and whether a concurrent build is running on it right now (then it
 * is invalid until the build ends, not broken).
 */
import type { Registry } from 'prom-client';
import { userSchema } from '../../db/bloat-estimate.js';
import { invalidIndexesSql } from '../../db/invalid-indexes.js';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = invalidIndexesSql({ permitted: 'true', schemas: userSchema('n.nspname') });

type Label = 'datname' | 'schemaname' | 'relname' | 'indexrelname';
type InfoLabel = Label | 'leftover' | 'building';
interface Row {
  schema: string;
  table: string;
  name: string;
  size_bytes: string;
  leftover: boolean;
  building: string | null;
}

export class InvalidIndexesCollector implements Collector {
  readonly name = 'invalid_indexes';
  readonly scope = 'database';
  readonly #size: CachedFamily<Label>;
  readonly #info: CachedFamily<InfoLabel>;
  readonly #rows = new Map<string, Row[]>();

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#size = new CachedFamily(registry, {
      name: 'pg_general_index_info_pg_relation_size',
      help: 'Size of each invalid index (left by a failed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY), in bytes; valid indexes are not listed.',
      type: 'gauge',
      labelNames: ['datname', 'schemaname', 'relname', 'indexrelname'],
    });
    this.#info = new CachedFamily(registry, {
      name: 'pgmaintd_invalid_index_info',
      help: 'An invalid index (1): leftover="true" for a _ccnew/_ccold leftover of REINDEX CONCURRENTLY, building="true" while a concurrent build on its table is still running.',
      type: 'gauge',
      labelNames: ['datname', 'schemaname', 'relname', 'indexrelname', 'leftover', 'building'],
    });
  }

  async collect({ client, database }: CollectorContext): Promise<void> {
    this.#rows.set(database, (await client.query<Row>(SQL)).rows);
    this.#publish();
  }

  clear(database?: string): void {
    if (database === undefined) this.#rows.clear();
    else this.#rows.delete(database);
    this.#publish();
  }

  #publish(): void {
    const all = [...this.#rows].flatMap(([datname, rows]) =>
      rows.map((r) => ({
        r,
        labels: { datname, schemaname: r.schema, relname: r.table, indexrelname: r.name },
      })),
    );
    this.#size.replace(all.map(({ r, labels }) => ({ labels, value: Number(r.size_bytes) })));
    this.#info.replace(
      all.map(({ r, labels }) => ({
        labels: { ...labels, leftover: String(r.leftover), building: String(r.building !== null) },
        value: 1,
      })),
    );
  }
}
