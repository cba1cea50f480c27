/**
 * WAL activity and WAL write timings from pg_stat_wal (PostgreSQL 14+): records, full-page images,
 * bytes, times wal_buffers was full, and the writes and syncs of WAL with their times
 * (pg_stat_wal_write_time_seconds_total, _sync_time_seconds_total; 0 unless track_wal_io_timing is
 * on). PostgreSQL 18 moved the writes and syncs to pg_stat_io (object 'wal'): from 18 they are its
 * sums, under the same names, so a panel keeps working across an upgrade. Before 14 there is no
 * pg_stat_wal and the collector succeeds with no series.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const COLUMNS: Array<[column: string, name: string, help: string]> = [
  ['wal_records', 'records_total', 'WAL records generated'],
  ['wal_fpi', 'fpi_total', 'WAL full page images generated'],
  ['wal_bytes', 'bytes_total', 'WAL generated, in bytes'],
  ['wal_buffers_full', 'buffers_full_total', 'Times WAL was written to disk because wal_buffers were full'],
  ['wal_write', 'write_total', 'Times WAL buffers were written out to disk'],
  ['wal_sync', 'sync_total', 'Times WAL files were synced to disk'],
  [
    'wal_write_time',
    'write_time_seconds_total',
    'Time spent writing WAL buffers to disk (track_wal_io_timing)',
  ],
  ['wal_sync_time', 'sync_time_seconds_total', 'Time spent syncing WAL files to disk (track_wal_io_timing)'],
];

const SQL_14 = `
  SELECT wal_records, wal_fpi, wal_bytes, wal_buffers_full, wal_write, wal_sync,
         wal_write_time / 1000 AS wal_write_time, wal_sync_time / 1000 AS wal_sync_time
    FROM pg_stat_wal`;

const SQL_18 = `
  SELECT w.wal_records, w.wal_fpi, w.wal_bytes, w.wal_buffers_full,
         io.writes AS wal_write, io.fsyncs AS wal_sync,
         io.write_time / 1000 AS wal_write_time, io.fsync_time / 1000 AS wal_sync_time
    FROM pg_stat_wal w,
         (SELECT coalesce(sum(writes), 0) AS writes, coalesce(sum(fsyncs), 0) AS fsyncs,
                 coalesce(sum(write_time), 0) AS write_time, coalesce(sum(fsync_time), 0) AS fsync_time
            FROM pg_stat_io WHERE object = 'wal') io`;

export class StatWalCollector implements Collector {
  readonly name = 'stat_wal';
  readonly #families: Array<[string, CachedFamily]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#families = COLUMNS.map(([column, name, help]) => [
      column,
      new CachedFamily(registry, { name: `pg_stat_wal_${name}`, help: `${help}.`, type: 'counter' }),
    ]);
  }

  async collect({ client, serverVersionNum }: CollectorContext): Promise<void> {
    if (serverVersionNum < 140000) return this.clear();
    const sql = serverVersionNum >= 180000 ? SQL_18 : SQL_14;
    const row = (await client.query<Record<string, string | null>>(sql)).rows[0]!;
    for (const [column, family] of this.#families) {
      const v = row[column];
      family.replace(v === undefined || v === null ? [] : [{ labels: {}, value: Number(v) }]);
    }
  }

  clear(): void {
    for (const [, f] of this.#families) f.clear();
  }
}
