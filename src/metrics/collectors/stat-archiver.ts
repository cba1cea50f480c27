/**
 * pg_stat_archiver_archived_count and _failed_count (counters) and _last_archive_age (seconds since
 * the last WAL file was archived; absent until one has been), as postgres_exporter's "stat_archiver"
 * collector exports them (collector/pg_stat_archiver.go). The age is the server's now() minus its own
 * timestamp, so pg-maintd's clock plays no part in it.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = `
  SELECT archived_count, failed_count,
         extract(epoch FROM now() - last_archived_time) AS last_archive_age
    FROM pg_stat_archiver`;

export class StatArchiverCollector implements Collector {
  readonly name = 'stat_archiver';
  readonly #archived: CachedFamily;
  readonly #failed: CachedFamily;
  readonly #age: CachedFamily;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#archived = new CachedFamily(registry, {
      name: 'pg_stat_archiver_archived_count',
      help: 'Number of WAL files that have been successfully archived',
      type: 'counter',
    });
    this.#failed = new CachedFamily(registry, {
      name: 'pg_stat_archiver_failed_count',
      help: 'Number of failed attempts for archiving WAL files',
      type: 'counter',
    });
    this.#age = new CachedFamily(registry, {
      name: 'pg_stat_archiver_last_archive_age',
      help: 'Time in seconds since last WAL segment was successfully archived',
      type: 'gauge',
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const row = (
      await client.query<{
        archived_count: string | null;
        failed_count: string | null;
        last_archive_age: string | null;
      }>(SQL)
    ).rows[0];
    const one = (v: string | null | undefined) =>
      v === null || v === undefined ? [] : [{ labels: {}, value: Number(v) }];
    this.#archived.replace(one(row?.archived_count));
    this.#failed.replace(one(row?.failed_count));
    this.#age.replace(one(row?.last_archive_age));
  }

  clear(): void {
    this.#archived.clear();
    this.#failed.clear();
    this.#age.clear();
  }
}
