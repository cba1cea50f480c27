/**
 * pg-maintd's advisory locks, in a namespace of their own (the first key of the two-key form).
 * Any role that may log in can take any advisory lock, so these are used only where a hostile
 * holder cannot stop pg-maintd's work: the migration runner (which waits and names the holder) and
 * the drills' scratch-database locks. Leader election uses leases (db/lease.ts) instead.
 */
import type pg from 'pg';
import { cleanName, describeSessions, type SessionInfo } from './sessions.js';

/** Namespace of pg-maintd's advisory locks: "pgmd". */
export const LOCK_NAMESPACE = 0x70676d64;

/** Takes the session-level lock `name` in pg-maintd's namespace if free: whether this session holds it now. */
export async function tryAdvisoryLock(client: pg.ClientBase, name: string): Promise<boolean> {
  const r = await client.query<{ ok: boolean }>(
    'SELECT pg_catalog.pg_try_advisory_lock($1::int4, pg_catalog.hashtext($2::text)) AS ok',
    [LOCK_NAMESPACE, name],
  );
  return r.rows[0]!.ok;
}

/** Waits for the session-level lock `name` in pg-maintd's namespace. */
export async function advisoryLock(client: pg.ClientBase, name: string): Promise<void> {
  await client.query('SELECT pg_catalog.pg_advisory_lock($1::int4, pg_catalog.hashtext($2::text))', [
    LOCK_NAMESPACE,
    name,
  ]);
}

export async function advisoryUnlock(client: pg.ClientBase, name: string): Promise<void> {
  await client.query('SELECT pg_catalog.pg_advisory_unlock($1::int4, pg_catalog.hashtext($2::text))', [
    LOCK_NAMESPACE,
    name,
  ]);
}

// The two-key form is shown in pg_locks as classid = key 1, objid = key 2, objsubid = 2; a negative
// hashtext() shows as its unsigned (oid) value. A prepared transaction holds its locks with no pid
// and outlives every session and restart: it is named from pg_prepared_xacts, through the lock on its
// own transaction id that it holds under the same virtual transaction.
const HOLDERS_SQL = `
  SELECT l.pid, p.gid, p.owner::text AS owner,
         extract(epoch FROM pg_catalog.clock_timestamp() - p.prepared)::float8 AS prepared_seconds
    FROM pg_catalog.pg_locks l
    LEFT JOIN pg_catalog.pg_locks x
           ON l.pid IS NULL AND x.locktype = 'transactionid' AND x.virtualtransaction = l.virtualtransaction
    LEFT JOIN pg_catalog.pg_prepared_xacts p ON p.transaction = x.transactionid
   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
     AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
     AND l.classid = $1::int4::oid AND l.objid = pg_catalog.hashtext($2::text)::oid
     AND (l.pid IS NULL OR l.pid <> pg_catalog.pg_backend_pid())`;

/** The sessions (other than this one), and prepared transactions, holding the lock `name` in this database. */
export async function advisoryLockHolders(client: pg.ClientBase, name: string): Promise<SessionInfo[]> {
  const r = await client.query<{
    pid: number | null;
    gid: string | null;
    owner: string | null;
    prepared_seconds: number | null;
  }>(HOLDERS_SQL, [LOCK_NAMESPACE, name]);
  const sessions = await describeSessions(
    client,
    r.rows.flatMap((x) => (x.pid === null ? [] : [x.pid])),
  );
  const prepared: SessionInfo[] = r.rows
    .filter((x) => x.pid === null)
    .map((x) => ({
      pid: 0,
      role: cleanName(x.owner),
      applicationName: null,
      clientAddr: null,
      state: 'prepared',
      xactSeconds: x.prepared_seconds === null ? null : Math.round(x.prepared_seconds),
      prepared: cleanName(x.gid) ?? '?',
    }));
  return [...sessions, ...prepared];
}
