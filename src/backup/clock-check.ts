/**
 * The local clock is not the truth. Before anything is deleted for its age, the local clock is
 * compared with clocks pg-maintd does not control: the store's (S3's Date header; a directory's
 * modification time of a file just written, which a local disk takes from this host, an NFS server
 * from its own) and the database server's. Any of them disagreeing by more than CLOCK_SKEW_TOLERANCE
 * stops the deletion.
 */
import type { Storage } from './storage/storage.js';

export type ClockReference = 'store' | 'database';

export interface ClockSkew {
  reference: ClockReference;
  /** Local clock minus the reference (positive: the local clock is ahead). */
  skewMs: number;
}

export interface ClockSources {
  storage: Storage;
  /** The database server's clock, or undefined when it cannot be read now. */
  databaseClock?: (() => Promise<Date | undefined>) | undefined;
}

/** Each reference that could be read, with its skew against the local clock. */
export async function measureSkews(s: ClockSources): Promise<ClockSkew[]> {
  const out: ClockSkew[] = [];
  const store = await s.storage.now().catch(() => undefined);
  if (store) out.push({ reference: 'store', skewMs: Date.now() - store.getTime() });
  if (s.databaseClock) {
    const t0 = performance.now();
    const db = await s.databaseClock().catch(() => undefined);
    // the server read its clock about halfway through the round trip
    if (db)
      out.push({ reference: 'database', skewMs: Date.now() - (performance.now() - t0) / 2 - db.getTime() });
  }
  return out;
}

/** Why the local clock cannot be trusted for deletions now, or undefined when it can. */
export function untrustedClock(
  skews: ClockSkew[],
  toleranceMs: number,
  storeClockMayBeLocal: boolean,
): { reason: 'clock_skew' | 'clock_unchecked'; text: string } | undefined {
  if (!skews.some((s) => s.reference === 'store'))
    return {
      reason: 'clock_unchecked',
      text: "the store's clock could not be read, so the local clock cannot be checked",
    };
  const bad = skews.filter((s) => Math.abs(s.skewMs) > toleranceMs);
  if (bad.length)
    return {
      reason: 'clock_skew',
      text: bad
        .map(
          (s) =>
            `the local clock is ${Math.round(Math.abs(s.skewMs) / 1000)} s ${s.skewMs > 0 ? 'ahead of' : 'behind'} the ${s.reference === 'store' ? "store's" : "database server's"} clock`,
        )
        .join('; '),
    };
  if (storeClockMayBeLocal && !skews.some((s) => s.reference === 'database'))
    return {
      reason: 'clock_unchecked',
      text: "the database server's clock could not be read, and a local directory's clock is this host's own, so the local clock cannot be checked",
    };
  return undefined;
}
