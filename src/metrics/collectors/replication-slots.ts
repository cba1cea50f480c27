/**
 * pg_replication_slots_* as postgres_exporter's "replication_slots" collector exports them
 * (collector/pg_replication_slots.go): per slot, {slot_name,database} active and pg_wal_lsn_diff (the
 * WAL the slot holds back, bytes from its restart_lsn to the current, or on a standby the received,
 * position), and {slot_name,slot_type} slot_current_wal_lsn, slot_confirmed_flush_lsn (active slots
 * only), slot_is_active, safe_wal_size_bytes and wal_status{wal_status} (1). The reference's pre-10
 * pg_xlog_location_diff and its pre-13 query without safe_wal_size and wal_status are not needed:
 * pg-maintd supports PostgreSQL 13 and later.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily, type Sample } from '../family.js';

// one query for both of the reference's (same view, same instant); numeric LSN arithmetic is read as
// text so no precision is lost before Number()
const SQL = `
  SELECT slot_name, slot_type, database, active,
         (CASE pg_is_in_recovery() WHEN true THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), restart_lsn)
               ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) END)::text AS pg_wal_lsn_diff,
         (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() - '0/0'
               ELSE pg_current_wal_lsn() - '0/0' END)::text AS current_wal_lsn,
         (coalesce(confirmed_flush_lsn, '0/0') - '0/0')::text AS confirmed_flush_lsn,
         safe_wal_size::text AS safe_wal_size, wal_status
    FROM pg_replication_slots`;

interface Row {
  slot_name: string | null;
  slot_type: string | null;
  database: string | null;
  active: boolean | null;
  pg_wal_lsn_diff: string | null;
  current_wal_lsn: string | null;
  confirmed_flush_lsn: string | null;
  safe_wal_size: string | null;
  wal_status: string | null;
}

type SlotLabel = 'slot_name' | 'database';
type TypeLabel = 'slot_name' | 'slot_type';

export class ReplicationSlotsCollector implements Collector {
  readonly name = 'replication_slots';
  readonly #active: CachedFamily<SlotLabel>;
  readonly #lsnDiff: CachedFamily<SlotLabel>;
  readonly #currentLsn: CachedFamily<TypeLabel>;
  readonly #flushLsn: CachedFamily<TypeLabel>;
  readonly #isActive: CachedFamily<TypeLabel>;
  readonly #safeWal: CachedFamily<TypeLabel>;
  readonly #walStatus: CachedFamily<TypeLabel | 'wal_status'>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    const slot = (name: string, help: string) =>
      new CachedFamily<SlotLabel>(registry, {
        name: `pg_replication_slots_${name}`,
        help,
        type: 'gauge',
        labelNames: ['slot_name', 'database'],
      });
    const typed = (name: string, help: string) =>
      new CachedFamily<TypeLabel>(registry, {
        name: `pg_replication_slots_${name}`,
        help,
        type: 'gauge',
        labelNames: ['slot_name', 'slot_type'],
      });
    this.#active = slot('active', 'Flag indicating if the slot is active');
    this.#lsnDiff = slot('pg_wal_lsn_diff', 'Replication lag in bytes');
    this.#currentLsn = typed('slot_current_wal_lsn', 'current wal lsn value');
    this.#flushLsn = typed('slot_confirmed_flush_lsn', 'last lsn confirmed flushed to the replication slot');
    this.#isActive = typed('slot_is_active', 'whether the replication slot is active or not');
    this.#safeWal = typed(
      'safe_wal_size_bytes',
      'number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost',
    );
    this.#walStatus = new CachedFamily(registry, {
      name: 'pg_replication_slots_wal_status',
      help: 'availability of WAL files claimed by this slot',
      type: 'gauge',
      labelNames: ['slot_name', 'slot_type', 'wal_status'],
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const rows = (await client.query<Row>(SQL)).rows;
    const active: Sample<SlotLabel>[] = [];
    const lsnDiff: Sample<SlotLabel>[] = [];
    const current: Sample<TypeLabel>[] = [];
    const flush: Sample<TypeLabel>[] = [];
    const isActive: Sample<TypeLabel>[] = [];
    const safe: Sample<TypeLabel>[] = [];
    const status: Sample<TypeLabel | 'wal_status'>[] = [];
    for (const r of rows) {
      // the reference's label values for NULLs: '' for the first pair, 'unknown' for the second
      const a = { slot_name: r.slot_name ?? '', database: r.database ?? '' };
      const t = { slot_name: r.slot_name ?? 'unknown', slot_type: r.slot_type ?? 'unknown' };
      if (r.active !== null) {
        active.push({ labels: a, value: r.active ? 1 : 0 });
        isActive.push({ labels: t, value: r.active ? 1 : 0 });
      }
      if (r.pg_wal_lsn_diff !== null) lsnDiff.push({ labels: a, value: Number(r.pg_wal_lsn_diff) });
      if (r.current_wal_lsn !== null) current.push({ labels: t, value: Number(r.current_wal_lsn) });
      if (r.active === true && r.confirmed_flush_lsn !== null) {
        flush.push({ labels: t, value: Number(r.confirmed_flush_lsn) });
      }
      if (r.safe_wal_size !== null) safe.push({ labels: t, value: Number(r.safe_wal_size) });
      if (r.wal_status !== null) status.push({ labels: { ...t, wal_status: r.wal_status }, value: 1 });
    }
    this.#active.replace(active);
    this.#lsnDiff.replace(lsnDiff);
    this.#currentLsn.replace(current);
    this.#flushLsn.replace(flush);
    this.#isActive.replace(isActive);
    this.#safeWal.replace(safe);
    this.#walStatus.replace(status);
  }

  clear(): void {
    for (const f of [
      this.#active,
      this.#lsnDiff,
      this.#currentLsn,
      this.#flushLsn,
      this.#isActive,
      this.#safeWal,
    ]) {
      f.clear();
    }
    this.#walStatus.clear();
  }
}
