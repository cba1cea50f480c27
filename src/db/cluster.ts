/**
 * Facts about the database cluster that pg-maintd compares against what it reads elsewhere: which
 * cluster it is (pg_control_system's system identifier, the same on a promoted physical standby,
 * different on any other cluster) and what its clock says.
 */
import type { Logger } from '../log/logger.js';
import { DbPool, type PoolSettings } from './pool.js';
import { errorMessage } from '../core/errors.js';

type Queryable = Pick<DbPool, 'query'>;

/**
 * A condition true only on the cluster whose identifier is the text parameter `$n` (any sign: the
 * bigint of pg_control_system() is negative for a cluster made after 2038), or when `$n` is null:
 * a statement that must not act on another cluster checks it in the same statement.
 */
export function onCluster(n: number): string {
  return `($${n}::text IS NULL OR (SELECT system_identifier::numeric FROM pg_catalog.pg_control_system())
            IN ($${n}::text::numeric, $${n}::text::numeric - 18446744073709551616))`;
}

/** One cluster's identifier however it is written: pg_control_system() gives it signed, pg_control unsigned. */
export function sameSystem(a: string, b: string): boolean {
  try {
    return BigInt.asUintN(64, BigInt(a)) === BigInt.asUintN(64, BigInt(b));
  } catch {
    return false;
  }
}

export async function systemIdentifier(pool: Queryable): Promise<string> {
  const r = await pool.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()');
  return r.rows[0]!.id;
}

export async function serverClock(pool: Queryable): Promise<Date> {
  const r = await pool.query<{ now: Date }>('SELECT clock_timestamp() AS now');
  return r.rows[0]!.now;
}

/**
 * A short-lived one-connection pool for one-shot commands that want a fact about the cluster of
 * DATABASE_URL but must not fail without it: `fn`'s result, or undefined when the database cannot be
 * reached within a few seconds.
 */
export async function withClusterFact<T>(
  db: PoolSettings,
  logger: Logger,
  fn: (pool: DbPool) => Promise<T>,
): Promise<T | undefined> {
  const pool = new DbPool(db, {
    name: 'cluster-facts',
    logger,
    max: 1,
    min: 0,
    acquireTimeoutMs: 5000,
    queryTimeoutMs: 5000,
  });
  try {
    return await fn(pool);
  } catch (err) {
    logger.debug({ err: { message: errorMessage(err) } }, 'the database could not be asked');
    return undefined;
  } finally {
    await pool.stop();
  }
}
