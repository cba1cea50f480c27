/** pg_replication_is_replica and pg_replication_lag_seconds, meaning what they mean in postgres_exporter. */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = `
  SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
              WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
              ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END AS lag,
         CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica`;

export class ReplicationCollector implements Collector {
  readonly name = 'replication';
  readonly #lag: CachedFamily;
  readonly #replica: CachedFamily;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#lag = new CachedFamily(registry, {
      name: 'pg_replication_lag_seconds',
      help: 'Replication lag behind master in seconds',
      type: 'gauge',
    });
    this.#replica = new CachedFamily(registry, {
      name: 'pg_replication_is_replica',
      help: 'Indicates if the server is a replica',
      type: 'gauge',
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const row = (await client.query<{ lag: string; is_replica: number }>(SQL)).rows[0]!;
    this.#lag.replace([{ labels: {}, value: Number(row.lag) }]);
    this.#replica.replace([{ labels: {}, value: Number(row.is_replica) }]);
  }

  clear(): void {
    this.#lag.clear();
    this.#replica.clear();
  }
}
