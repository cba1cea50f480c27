/**
 * pg_stat_replication_pg_current_wal_lsn_bytes and _pg_wal_lsn_diff per WAL sender, as
 * postgres_exporter's "stat_replication" collector exports them (collector/pg_stat_replication.go),
 * with its labels {application_name, client_addr, state, slot_name, pid}: the server's WAL position in
 * bytes, and how far the standby's replay is behind it. slot_name comes from the slot the sender
 * holds (empty without one); client_addr is inet as text ("10.0.0.2/32"), empty over a Unix socket.
 * The reference's pre-10 pg_xlog_location_diff is not needed (pg-maintd supports 13 and later).
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily, type Sample } from '../family.js';

const SQL = `
  SELECT application_name, client_addr::text AS client_addr, state, s.slot_name, r.pid,
         (CASE pg_is_in_recovery() WHEN true THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')
               ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END)::float8 AS pg_current_wal_lsn_bytes,
         (CASE pg_is_in_recovery() WHEN true THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), replay_lsn)
               ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) END)::float8 AS pg_wal_lsn_diff
    FROM pg_stat_replication r
    LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid`;

type Label = 'application_name' | 'client_addr' | 'state' | 'slot_name' | 'pid';
const LABELS: Label[] = ['application_name', 'client_addr', 'state', 'slot_name', 'pid'];

interface Row {
  application_name: string | null;
  client_addr: string | null;
  state: string | null;
  slot_name: string | null;
  pid: number | null;
  pg_current_wal_lsn_bytes: number | null;
  pg_wal_lsn_diff: number | null;
}

export class StatReplicationCollector implements Collector {
  readonly name = 'stat_replication';
  readonly #current: CachedFamily<Label>;
  readonly #diff: CachedFamily<Label>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#current = new CachedFamily(registry, {
      name: 'pg_stat_replication_pg_current_wal_lsn_bytes',
      help: 'WAL position in bytes',
      type: 'gauge',
      labelNames: LABELS,
    });
    this.#diff = new CachedFamily(registry, {
      name: 'pg_stat_replication_pg_wal_lsn_diff',
      help: 'Lag in bytes between master and slave',
      type: 'gauge',
      labelNames: LABELS,
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const rows = (await client.query<Row>(SQL)).rows;
    const current: Sample<Label>[] = [];
    const diff: Sample<Label>[] = [];
    for (const r of rows) {
      const labels = {
        application_name: r.application_name ?? '',
        client_addr: r.client_addr ?? '',
        state: r.state ?? '',
        slot_name: r.slot_name ?? '',
        pid: r.pid === null ? '' : String(r.pid),
      };
      if (r.pg_current_wal_lsn_bytes !== null) current.push({ labels, value: r.pg_current_wal_lsn_bytes });
      if (r.pg_wal_lsn_diff !== null) diff.push({ labels, value: r.pg_wal_lsn_diff });
    }
    this.#current.replace(current);
    this.#diff.replace(diff);
  }

  clear(): void {
    this.#current.clear();
    this.#diff.clear();
  }
}
