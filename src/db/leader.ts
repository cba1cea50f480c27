/**
 * Leader election per job and tick, on leases (db/lease.ts) in a table only pg-maintd's role can
 * write (db/lease-table.ts): the replica (or one-shot command) that takes the lease `<job>:<database>`
 * runs the work, and the work's signal is aborted if the lease is lost meanwhile; the others stand
 * aside. Advisory locks are not used for this: any role that may log in could take them and
 * silently stop every backup.
 */
import type { DbPool } from './pool.js';
import { acquireLease, type Lease, type LeaseHolder } from './lease.js';
import { ensureLeaseTable, type LeaseProblem } from './lease-table.js';
import type { Logger } from '../log/logger.js';

export type LeaderResult<T> =
  | { led: true; value: T }
  /** Another pg-maintd (replica or one-shot command) holds the lease: only pg-maintd's role can write it. */
  | { led: false; reason: 'not_leader'; holder: LeaseHolder }
  /** The lease table cannot be trusted or made: the work is not done until a DBA fixes it. */
  | { led: false; reason: 'lease_unusable'; problem: LeaseProblem };

export interface LeaderOptions {
  ttlMs: number;
  logger: Logger;
}

/** What the work under a lease may ask of it: which slot was done last, and record one done. */
export type HeldLease = Pick<Lease, 'lastDone' | 'recordDone'>;

/**
 * Runs `fn` if this process takes the lease `name`; `fn`'s signal aborts (with a LeaseLostError)
 * if the lease is lost before it ends. Database errors on the way to the lease throw.
 */
export async function asLeader<T>(
  pool: DbPool,
  name: string,
  o: LeaderOptions,
  fn: (signal: AbortSignal, lease: HeldLease) => Promise<T>,
): Promise<LeaderResult<T>> {
  const problem = await ensureLeaseTable(pool);
  if (problem) return { led: false, reason: 'lease_unusable', problem };
  const got = await acquireLease(pool, name, o);
  if ('heldBy' in got) return { led: false, reason: 'not_leader', holder: got.heldBy };
  try {
    return { led: true, value: await fn(got.lease.signal, got.lease) };
  } finally {
    await got.lease.release();
  }
}

/** "host pid 42, since 2024-05-01T02:00:00.000Z, expires 2024-05-01T02:01:00.000Z", for messages. */
export function holderText(h: LeaseHolder): string {
  return `${h.holder}, since ${h.acquiredAt.toISOString()}, expires ${h.expiresAt.toISOString()}`;
}
