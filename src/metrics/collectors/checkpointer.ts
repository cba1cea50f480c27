/**
 * pg_stat_checkpointer (PostgreSQL 17+) under postgres_exporter's names (its stat_checkpointer
 * collector): pg_stat_checkpointer_*_total, times in milliseconds as it has them. Checkpoints and
 * restartpoints, their write and sync times and buffers written; num_done and slru_written from 18.
 * Before 17 those figures live in pg_stat_bgwriter (the bgwriter collector exports them there) and
 * this collector succeeds with no series, as the reference skips it.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const COLUMNS: Array<[column: string, help: string]> = [
  ['num_timed', 'Number of scheduled checkpoints due to timeout'],
  ['num_requested', 'Number of requested checkpoints that have been performed'],
  ['num_done', 'Number of checkpoints that have been performed (PostgreSQL 18+)'],
  [
    'restartpoints_timed',
    'Number of scheduled restartpoints due to timeout or after a failed attempt to perform it',
  ],
  ['restartpoints_req', 'Number of requested restartpoints'],
  ['restartpoints_done', 'Number of restartpoints that have been performed'],
  [
    'write_time',
    'Total amount of time that has been spent in the portion of processing checkpoints and restartpoints where files are written to disk, in milliseconds',
  ],
  [
    'sync_time',
    'Total amount of time that has been spent in the portion of processing checkpoints and restartpoints where files are synchronized to disk, in milliseconds',
  ],
  ['buffers_written', 'Number of buffers written during checkpoints and restartpoints'],
  ['slru_written', 'Number of SLRU buffers written during checkpoints and restartpoints (PostgreSQL 18+)'],
  ['stats_reset', 'Time at which these statistics were last reset'],
];

// through to_jsonb, so the columns 18 added are read when they are there
const SQL = `SELECT to_jsonb(c) - 'stats_reset' || jsonb_build_object('stats_reset', coalesce(extract(epoch FROM c.stats_reset), 0)) AS j
               FROM pg_stat_checkpointer c`;

export class CheckpointerCollector implements Collector {
  readonly name = 'stat_checkpointer';
  readonly #families: Array<[string, CachedFamily]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#families = COLUMNS.map(([column, help]) => [
      column,
      new CachedFamily(registry, { name: `pg_stat_checkpointer_${column}_total`, help, type: 'counter' }),
    ]);
  }

  async collect({ client, serverVersionNum }: CollectorContext): Promise<void> {
    if (serverVersionNum < 170000) return this.clear();
    const row = (await client.query<{ j: Record<string, number | string | null> }>(SQL)).rows[0]!.j;
    for (const [column, family] of this.#families) {
      const v = row[column];
      family.replace(v === undefined || v === null ? [] : [{ labels: {}, value: Number(v) }]);
    }
  }

  clear(): void {
    for (const [, f] of this.#families) f.clear();
  }
}
