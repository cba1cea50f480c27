/**
 * How far behind its primary a hot standby is, for a backup taken from it. A standby whose replay
 * is paused, delayed (recovery_min_apply_delay), cut off from its primary (after a failover it may
 * still wait for the old one), or far behind, would give a backup that is good to every check and
 * holds old data: the backup-too-old alerts would stay quiet, and with BACKUP_FROM=any it would
 * even take the slot from the primary. So such a backup is refused, saying why.
 *
 * The lag is measured as postgres_exporter does: none when everything received has been replayed
 * (an idle primary sends nothing, and the last replayed transaction then grows old harmlessly), else
 * the age of the last replayed transaction.
 */
import type { DbPool } from './pool.js';

type Queryable = Pick<DbPool, 'query'>;

const REPLAY_SQL = `
  SELECT pg_catalog.pg_is_in_recovery() AS standby,
         pg_catalog.pg_is_in_recovery() AND pg_catalog.pg_is_wal_replay_paused() AS paused,
         (SELECT w.status FROM pg_catalog.pg_stat_wal_receiver w LIMIT 1) AS receiver,
         CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN 0
              WHEN pg_catalog.pg_last_wal_receive_lsn() OPERATOR(pg_catalog.=) pg_catalog.pg_last_wal_replay_lsn() THEN 0
              ELSE coalesce(EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp()), 0)
         END::float8 AS lag_seconds`;

/** Why a backup from this server would hold stale data, with the fix; undefined when it would not. */
export async function standbyStaleness(
  pool: Queryable,
  maxLagMs: number,
): Promise<{ problem: string; fix: string } | undefined> {
  const r = await pool.query<{
    standby: boolean;
    paused: boolean;
    receiver: string | null;
    lag_seconds: number;
  }>(REPLAY_SQL);
  const s = r.rows[0]!;
  if (!s.standby) return undefined;
  if (s.paused)
    return {
      problem: 'the standby has its WAL replay paused, so its data stops at the pause',
      fix: 'resume replay (SELECT pg_wal_replay_resume()), or take backups from the primary (BACKUP_FROM=primary)',
    };
  if (s.receiver !== 'streaming')
    return {
      problem: `the standby is not streaming from a primary (WAL receiver ${s.receiver ?? 'not running'}): after a failover it may follow a primary that is gone`,
      fix: 'point the standby at the current primary (primary_conninfo), or take backups from the primary (BACKUP_FROM=primary)',
    };
  if (s.lag_seconds * 1000 > maxLagMs)
    return {
      problem: `the standby's replay is ${Math.round(s.lag_seconds)} s behind its primary, more than BACKUP_MAX_STANDBY_LAG (${Math.round(maxLagMs / 1000)} s)`,
      fix: "find what holds replay back (recovery_min_apply_delay, a replay conflict, the standby's I/O), raise BACKUP_MAX_STANDBY_LAG if that lag is acceptable, or take backups from the primary",
    };
  return undefined;
}
