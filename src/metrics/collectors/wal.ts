/**
 * pg_wal_segments and pg_wal_size_bytes: the WAL segment files in pg_wal (names of 24 hex digits, so
 * .partial, .history and archive_status are not counted), as postgres_exporter's "wal" collector
 * exports them (collector/pg_wal.go). pg_ls_waldir() needs pg_monitor (or superuser).
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = `
  SELECT count(*) AS segments, sum(size) AS size
    FROM pg_ls_waldir()
   WHERE name ~ '^[0-9A-F]{24}$'`;

export class WalCollector implements Collector {
  readonly name = 'wal';
  readonly #segments: CachedFamily;
  readonly #size: CachedFamily;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#segments = new CachedFamily(registry, {
      name: 'pg_wal_segments',
      help: 'Number of WAL segments',
      type: 'gauge',
    });
    this.#size = new CachedFamily(registry, {
      name: 'pg_wal_size_bytes',
      help: 'Total size of WAL segments',
      type: 'gauge',
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const row = (await client.query<{ segments: string; size: string | null }>(SQL)).rows[0]!;
    this.#segments.replace([{ labels: {}, value: Number(row.segments) }]);
    this.#size.replace(row.size === null ? [] : [{ labels: {}, value: Number(row.size) }]);
  }

  clear(): void {
    this.#segments.clear();
    this.#size.clear();
  }
}
