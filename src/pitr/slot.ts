/**
 * pg-maintd's physical replication slot, and the one query the archiver asks the primary every
 * second: where the server's WAL ends now and what the slot holds. The slot is created when missing
 * (reserving WAL at once, so nothing written from then on is removed before pg_receivewal reads
 * it) and never dropped in normal operation: only one the server invalidated (wal_status 'lost'),
 * which can no longer serve anyone, is dropped to be made again.
 */
import { onCluster } from '../db/cluster.js';
import type { DbPool } from '../db/pool.js';

type Queryable = Pick<DbPool, 'query'>;

export interface SlotState {
  exists: boolean;
  /** reserved, extended, unreserved or lost (PG13+); undefined when the slot is missing. */
  walStatus: string | undefined;
  active: boolean;
  /** Bytes of WAL the server keeps for the slot (current position - restart_lsn). */
  retainedBytes: number | undefined;
}

export interface ServerPosition {
  /** pg_current_wal_lsn() as a byte position. */
  lsn: bigint;
  /** The cluster's system identifier, as pg_control_system() gives it. */
  sysid: string;
  at: number;
  slot: SlotState;
}

const POSITION_SQL = `
  SELECT (pg_catalog.pg_current_wal_lsn() - '0/0'::pg_catalog.pg_lsn)::text AS lsn,
         (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS sysid,
         s.slot_name IS NOT NULL AS exists,
         s.wal_status::text AS wal_status,
         coalesce(s.active, false) AS active,
         (pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::text AS retained
    FROM (SELECT 1) AS one
    LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1::text AND s.slot_type = 'physical'`;

export async function serverPosition(pool: Queryable, slot: string): Promise<ServerPosition> {
  const r = await pool.query<{
    lsn: string;
    sysid: string;
    exists: boolean;
    wal_status: string | null;
    active: boolean;
    retained: string | null;
  }>(POSITION_SQL, [slot]);
  const row = r.rows[0]!;
  return {
    lsn: BigInt(row.lsn.replace(/\..*$/, '')),
    sysid: row.sysid,
    at: Date.now(),
    slot: {
      exists: row.exists,
      walStatus: row.wal_status ?? undefined,
      active: row.active,
      retainedBytes: row.retained === null ? undefined : Number(row.retained),
    },
  };
}

export async function slotState(pool: Queryable, slot: string): Promise<SlotState> {
  return (await serverPosition(pool, slot)).slot;
}

/**
 * Creates the slot if missing, reserving WAL from now; true when it was created by this call. With
 * `sysid`, only on that cluster (checked in the statement that creates it).
 */
export async function ensureSlot(pool: Queryable, slot: string, sysid?: string): Promise<boolean> {
  const r = await pool.query<{ created: boolean }>(
    `SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::text) AS created`,
    [slot],
  );
  if (!r.rows[0]!.created) return false;
  try {
    const made = await pool.query(
      `SELECT pg_catalog.pg_create_physical_replication_slot($1::name, true) WHERE ${onCluster(2)}`,
      [slot, sysid ?? null],
    );
    if (made.rows.length === 0)
      throw new Error(
        `DATABASE_URL names another cluster than the one archived (${sysid}): no slot made there`,
      );
    return true;
  } catch (err) {
    // another replica (or a DBA) made it between the two statements: the slot exists, as wanted
    if ((err as { code?: string }).code === '42710') return false;
    throw err;
  }
}

/** Drops a slot the server invalidated (it can serve no one) so it can be made again; nothing else. */
export async function dropLostSlot(pool: Queryable, slot: string): Promise<boolean> {
  const r = await pool.query<{ dropped: boolean }>(
    `SELECT pg_catalog.pg_drop_replication_slot(slot_name) IS NULL AS dropped
       FROM pg_catalog.pg_replication_slots
      WHERE slot_name = $1::text AND wal_status = 'lost' AND NOT active`,
    [slot],
  );
  return r.rowCount === 1;
}

/** The server's WAL segment size in bytes (wal_segment_size, set at initdb). */
export async function walSegmentBytes(pool: Queryable): Promise<number> {
  const r = await pool.query<{ setting: string }>(
    `SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'`,
  );
  return Number(r.rows[0]!.setting);
}

/** The server's major version, whether it is a standby, and which cluster it is (pg_control_system()'s identifier). */
export async function serverFacts(
  pool: Queryable,
): Promise<{ major: number; standby: boolean; sysid: string }> {
  const r = await pool.query<{ v: string; standby: boolean; sysid: string }>(
    `SELECT pg_catalog.current_setting('server_version_num') AS v, pg_catalog.pg_is_in_recovery() AS standby,
            (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS sysid`,
  );
  const row = r.rows[0]!;
  return { major: Math.floor(Number(row.v) / 10000), standby: row.standby, sysid: row.sysid };
}
