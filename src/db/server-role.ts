/**
 * Whether the server is a primary or a hot standby (in recovery). Asked afresh for each job run
 * and each migration attempt: a promotion turns a standby into a primary, and a failover with
 * pg_rewind turns an old primary into a standby, both under a running pg-maintd.
 */
import type { DbPool } from './pool.js';

export type ServerRole = 'primary' | 'standby';

type Queryable = Pick<DbPool, 'query'>;

export async function serverRole(pool: Queryable): Promise<ServerRole> {
  const r = await pool.query<{ recovery: boolean }>('SELECT pg_catalog.pg_is_in_recovery() AS recovery');
  return r.rows[0]!.recovery ? 'standby' : 'primary';
}
