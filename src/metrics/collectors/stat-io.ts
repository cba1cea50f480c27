/**
 * pg_stat_io (PostgreSQL 16+): I/O by backend type, object (relation, temp relation; wal from 18) and
 * context (normal, vacuum, bulkread, bulkwrite; init for WAL), the rows PostgreSQL itself lists, a few
 * dozen, so the series are bounded by the server, not by the workload. Counters as
 * pg_stat_io_<operation>_total and times as pg_stat_io_<operation>_time_seconds_total (PostgreSQL
 * counts milliseconds; the times stay 0 unless track_io_timing is on, track_wal_io_timing for WAL). An
 * operation a row cannot do (NULL, such as fsyncs of a temp relation) has no series. Before 16 the
 * collector succeeds with no series.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

type Label = 'backend_type' | 'object' | 'context';
const COLUMNS: Array<[column: string, name: string, scale: number, help: string]> = [
  ['reads', 'reads_total', 1, 'Read operations'],
  ['read_time', 'read_time_seconds_total', 1e-3, 'Time spent in read operations'],
  ['writes', 'writes_total', 1, 'Write operations'],
  ['write_time', 'write_time_seconds_total', 1e-3, 'Time spent in write operations'],
  ['writebacks', 'writebacks_total', 1, 'Units of op_bytes the process asked the kernel to write out'],
  ['writeback_time', 'writeback_time_seconds_total', 1e-3, 'Time spent in writeback operations'],
  ['extends', 'extends_total', 1, 'Relation extend operations'],
  ['extend_time', 'extend_time_seconds_total', 1e-3, 'Time spent in extend operations'],
  ['hits', 'hits_total', 1, 'Times a wanted block was found in a shared or local buffer'],
  ['evictions', 'evictions_total', 1, 'Times a block was written out of a buffer to make it available'],
  ['reuses', 'reuses_total', 1, 'Times a buffer of a ring (bulkread, bulkwrite, vacuum) was reused'],
  ['fsyncs', 'fsyncs_total', 1, 'fsync calls'],
  ['fsync_time', 'fsync_time_seconds_total', 1e-3, 'Time spent in fsync operations'],
  // PostgreSQL 18: bytes instead of op_bytes units
  ['read_bytes', 'read_bytes_total', 1, 'Bytes read (PostgreSQL 18+)'],
  ['write_bytes', 'write_bytes_total', 1, 'Bytes written (PostgreSQL 18+)'],
  ['extend_bytes', 'extend_bytes_total', 1, 'Bytes added by extend operations (PostgreSQL 18+)'],
];

const SQL = 'SELECT * FROM pg_stat_io ORDER BY backend_type, object, context';

export class StatIoCollector implements Collector {
  readonly name = 'stat_io';
  readonly #families: Array<[column: string, scale: number, family: CachedFamily<Label>]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#families = COLUMNS.map(([column, name, scale, help]) => [
      column,
      scale,
      new CachedFamily<Label>(registry, {
        name: `pg_stat_io_${name}`,
        help: `${help} (pg_stat_io, PostgreSQL 16+).`,
        type: 'counter',
        labelNames: ['backend_type', 'object', 'context'],
      }),
    ]);
  }

  async collect({ client, serverVersionNum }: CollectorContext): Promise<void> {
    if (serverVersionNum < 160000) return this.clear();
    const rows = (await client.query<Record<string, string | null>>(SQL)).rows;
    for (const [column, scale, family] of this.#families) {
      family.replace(
        rows
          .filter((r) => r[column] !== undefined && r[column] !== null)
          .map((r) => ({
            labels: { backend_type: r.backend_type!, object: r.object!, context: r.context! },
            value: Number(r[column]) * scale,
          })),
      );
    }
  }

  clear(): void {
    for (const [, , f] of this.#families) f.clear();
  }
}
