/**
 * Leader election per job and tick: the replica that takes `pg_try_advisory_lock` on a dedicated
 * session runs the job; the others skip. The lock lives as long as the session, so a crashed leader
 * frees it at once.
 */
import type pg from 'pg';
import type { DbPool } from '../db/pool.js';

/** Namespace of pg-maintd's advisory locks (the first key of the two-key form): "pgmd". */
export const LOCK_NAMESPACE = 0x70676d64;

/** Takes the session-level lock `name` in pg-maintd's namespace if free: whether this session holds it now. */
export async function tryAdvisoryLock(client: pg.ClientBase, name: string): Promise<boolean> {
  const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [
    LOCK_NAMESPACE,
    name,
  ]);
  return r.rows[0]!.ok;
}

/** Waits for the session-level lock `name` in pg-maintd's namespace. */
export async function advisoryLock(client: pg.ClientBase, name: string): Promise<void> {
  await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NAMESPACE, name]);
}

export async function advisoryUnlock(client: pg.ClientBase, name: string): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [LOCK_NAMESPACE, name]);
}

export type LeaderResult<T> = { led: true; value: T } | { led: false };

export async function asLeader<T>(
  pool: DbPool,
  lockName: string,
  fn: () => Promise<T>,
): Promise<LeaderResult<T>> {
  const client = await pool.connect();
  let locked = false;
  try {
    locked = await tryAdvisoryLock(client, lockName);
    if (!locked) return { led: false };
    return { led: true, value: await fn() };
  } finally {
    if (locked) await advisoryUnlock(client, lockName).catch(() => undefined);
    client.release();
  }
}
