/**
 * pg_stat_bgwriter_*_total as postgres_exporter's "stat_bgwriter" collector exports them (counters, no
 * labels; times in milliseconds, stats_reset as Unix seconds). PostgreSQL 17 moved the checkpoint
 * columns to pg_stat_checkpointer and dropped buffers_backend*: from 17 the checkpoint figures are read
 * there, under the same names, so checkpoint panels keep working; buffers_backend* are absent.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const COLUMNS: Array<[column: string, help: string]> = [
  ['checkpoints_timed', 'Number of scheduled checkpoints that have been performed'],
  ['checkpoints_req', 'Number of requested checkpoints that have been performed'],
  [
    'checkpoint_write_time',
    'Total amount of time that has been spent in the portion of checkpoint processing where files are written to disk, in milliseconds',
  ],
  [
    'checkpoint_sync_time',
    'Total amount of time that has been spent in the portion of checkpoint processing where files are synchronized to disk, in milliseconds',
  ],
  ['buffers_checkpoint', 'Number of buffers written during checkpoints'],
  ['buffers_clean', 'Number of buffers written by the background writer'],
  [
    'maxwritten_clean',
    'Number of times the background writer stopped a cleaning scan because it had written too many buffers',
  ],
  ['buffers_backend', 'Number of buffers written directly by a backend'],
  [
    'buffers_backend_fsync',
    'Number of times a backend had to execute its own fsync call (normally the background writer handles those even when the backend does its own write)',
  ],
  ['buffers_alloc', 'Number of buffers allocated'],
  ['stats_reset', 'Time at which these statistics were last reset'],
];

const RESET = 'coalesce(extract(epoch FROM b.stats_reset), 0) AS stats_reset';

const SQL_BEFORE_17 = `
  SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, checkpoint_sync_time,
         buffers_checkpoint, buffers_clean, maxwritten_clean, buffers_backend, buffers_backend_fsync,
         buffers_alloc, ${RESET}
    FROM pg_stat_bgwriter b`;

const SQL_FROM_17 = `
  SELECT c.num_timed AS checkpoints_timed, c.num_requested AS checkpoints_req,
         c.write_time AS checkpoint_write_time, c.sync_time AS checkpoint_sync_time,
         c.buffers_written AS buffers_checkpoint, b.buffers_clean, b.maxwritten_clean, b.buffers_alloc,
         ${RESET}
    FROM pg_stat_bgwriter b, pg_stat_checkpointer c`;

export class BgwriterCollector implements Collector {
  readonly name = 'stat_bgwriter';
  readonly #families: Array<[string, CachedFamily]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#families = COLUMNS.map(([column, help]) => [
      column,
      new CachedFamily(registry, { name: `pg_stat_bgwriter_${column}_total`, help, type: 'counter' }),
    ]);
  }

  async collect({ client, serverVersionNum }: CollectorContext): Promise<void> {
    const sql = serverVersionNum >= 170000 ? SQL_FROM_17 : SQL_BEFORE_17;
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
