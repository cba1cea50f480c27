/**
 * pg_replication_is_replica, pg_replication_lag_seconds and pg_replication_last_replay_seconds,
 * meaning what they mean in postgres_exporter. Lag is 0 while the replica has replayed all it has
 * received (an idle primary otherwise looks like a growing lag); last_replay is the age of the last
 * replayed transaction whatever the receive position. pgmaintd_server_in_recovery says the same as
 * is_replica under pg-maintd's own name, for the rules about what pg-maintd does on a standby (its
 * migrations wait, its maintenance and, by BACKUP_FROM, backups are skipped).
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = `
  SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
              WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
              ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END AS lag,
         CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica,
         CASE WHEN NOT pg_is_in_recovery() THEN 0
              ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END AS last_replay`;

export class ReplicationCollector implements Collector {
  readonly name = 'replication';
  readonly #lag: CachedFamily;
  readonly #replica: CachedFamily;
  readonly #lastReplay: CachedFamily;
  readonly #inRecovery: CachedFamily;

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
    this.#lastReplay = new CachedFamily(registry, {
      name: 'pg_replication_last_replay_seconds',
      help: 'Age of last replay in seconds',
      type: 'gauge',
    });
    this.#inRecovery = new CachedFamily(registry, {
      name: 'pgmaintd_server_in_recovery',
      help: '1 while the server of DATABASE_URL is a standby (pg_is_in_recovery()): migrations wait, maintenance and drills are skipped, backups follow BACKUP_FROM.',
      type: 'gauge',
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const row = (await client.query<{ lag: string; is_replica: number; last_replay: string | null }>(SQL))
      .rows[0]!;
    this.#lag.replace([{ labels: {}, value: Number(row.lag) }]);
    this.#replica.replace([{ labels: {}, value: Number(row.is_replica) }]);
    this.#inRecovery.replace([{ labels: {}, value: Number(row.is_replica) }]);
    // a replica that has replayed nothing yet has no replay timestamp: no series rather than a 0
    this.#lastReplay.replace(
      row.last_replay === null ? [] : [{ labels: {}, value: Number(row.last_replay) }],
    );
  }

  clear(): void {
    this.#lag.clear();
    this.#replica.clear();
    this.#lastReplay.clear();
    this.#inRecovery.clear();
  }
}
