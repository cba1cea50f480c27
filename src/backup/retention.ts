/**
 * Retention: deletes good backups older than BACKUP_RETENTION_DAYS (by their manifest), never
 * leaving fewer than BACKUP_RETENTION_MIN_COUNT, keeping GFS picks, and removing incomplete
 * leftovers past a grace period. It only reads and deletes under its own database's prefix, a failed
 * listing deletes nothing, a misdated backup is neither deleted nor counted toward the minimum,
 * and nothing is deleted while the local clock disagrees with the store's or the database's.
 */
import type { Logger } from '../log/logger.js';
import type { Catalog, CatalogListing } from './catalog.js';
import { measureSkews, untrustedClock } from './clock-check.js';
import type { BackupMetrics } from './metrics.js';
import { MANIFEST_SUFFIX, VERIFY_SUFFIX } from './naming.js';
import { lockedUntil, type LockedObject, type Storage } from './storage/storage.js';

export interface RetentionPolicy {
  days: number;
  minCount: number;
  keepDaily: number;
  keepWeekly: number;
  keepMonthly: number;
  incompleteGraceMs: number;
}

export interface RetentionPlan {
  keep: Array<{ key: string; why: string[] }>;
  remove: Array<{ key: string; why: string }>;
  /** Every object key to delete (data, manifest and verify record of each removed backup). */
  objectKeys: string[];
  /** Set when nothing was deleted although the plan says so, and why. */
  skipped?: string;
  /** Objects the store refused to delete because they are locked: retained, tried again next run. */
  locked?: LockedObject[];
}

const DAY = 86_400_000;

export function planRetention(listing: CatalogListing, p: RetentionPolicy, now: Date): RetentionPlan {
  // a misdated backup proves nothing about recent backups, and its age cannot be told: it is kept,
  // outside the count
  const good = listing.good.filter((g) => !g.suspect);
  const reasons = new Map<string, string[]>(good.map((g) => [g.key, []]));
  const cutoff = now.getTime() - p.days * DAY;
  good.forEach((g, i) => {
    if (i < p.minCount) reasons.get(g.key)!.push('min-count');
    if (g.at.getTime() >= cutoff) reasons.get(g.key)!.push(`younger than ${p.days}d`);
  });
  const gfs = (n: number, label: string, bucket: (d: Date) => string) => {
    const seen = new Set<string>();
    for (const g of good) {
      // newest first: the first backup of each bucket is that bucket's newest
      const b = bucket(g.at);
      if (seen.has(b)) continue;
      if (seen.size >= n) break;
      seen.add(b);
      reasons.get(g.key)!.push(`${label} ${b}`);
    }
  };
  if (p.keepDaily) gfs(p.keepDaily, 'daily', (d) => d.toISOString().slice(0, 10));
  if (p.keepWeekly) gfs(p.keepWeekly, 'weekly', isoWeek);
  if (p.keepMonthly) gfs(p.keepMonthly, 'monthly', (d) => d.toISOString().slice(0, 7));

  const plan: RetentionPlan = { keep: [], remove: [], objectKeys: [] };
  for (const g of listing.good) {
    if (g.suspect) {
      plan.keep.push({ key: g.key, why: [`misdated (${g.suspect.detail})`] });
      continue;
    }
    const why = reasons.get(g.key)!;
    if (why.length) plan.keep.push({ key: g.key, why });
    else {
      plan.remove.push({ key: g.key, why: `older than ${p.days}d` });
      plan.objectKeys.push(g.key, g.key + MANIFEST_SUFFIX, ...(g.verifyKeys ?? [g.key + VERIFY_SUFFIX]));
    }
  }
  for (const l of listing.incomplete) {
    if (l.deletable && now.getTime() - l.lastModified.getTime() > p.incompleteGraceMs) {
      plan.remove.push({ key: l.key, why: `incomplete (${l.why})` });
      plan.objectKeys.push(l.key);
    }
  }
  return plan;
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / DAY + 1) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

export interface RetentionDeps {
  catalog: Catalog;
  metrics?: BackupMetrics;
  logger: Logger;
  /** Local clock against store and database: beyond this nothing is deleted. */
  clockToleranceMs: number;
  /** The database server's clock, a second reference besides the store's, where it can be read. */
  databaseClock?: (() => Promise<Date | undefined>) | undefined;
}

export async function applyRetention(
  deps: RetentionDeps,
  database: string,
  policy: RetentionPolicy,
  /** `now`: plan as of this time (what-if and tests); the clock check always uses the real clock. */
  opts: { dryRun?: boolean; now?: Date } = {},
): Promise<RetentionPlan> {
  const log = deps.logger.child({ job: 'retention', database });
  const listing = await deps.catalog.list(database); // throws on a failed listing: nothing is deleted
  const plan = planRetention(listing, policy, opts.now ?? new Date());
  if (plan.objectKeys.length > 0) {
    const skews = await measureSkews({ storage: deps.catalog.storage, databaseClock: deps.databaseClock });
    for (const s of skews) deps.metrics?.clockSkew.set({ reference: s.reference }, s.skewMs / 1000);
    const distrust = untrustedClock(skews, deps.clockToleranceMs, deps.catalog.storage.clockMayBeLocal);
    if (distrust) {
      plan.skipped = `${distrust.text}: nothing was deleted (CLOCK_SKEW_TOLERANCE is ${deps.clockToleranceMs / 1000} s)`;
      deps.metrics?.retentionSkipped.inc({ database, reason: distrust.reason });
      log.error(
        { skews, wouldRemove: plan.remove.map((r) => r.key) },
        distrust.reason === 'clock_skew'
          ? `retention skipped: ${plan.skipped}; fix the clock (NTP) of this host or of the other side`
          : `retention skipped: ${plan.skipped}; it runs again once the database answers`,
      );
      return plan;
    }
  }
  if (opts.dryRun || plan.objectKeys.length === 0) {
    if (!opts.dryRun) deps.metrics?.retentionLocked.set({ database }, 0);
    log.info(
      { dryRun: !!opts.dryRun, keep: plan.keep.length, remove: plan.remove.map((r) => r.key) },
      'retention planned',
    );
    return plan;
  }
  const { locked, retained } = await deleteManifestsFirst(deps.catalog.storage, plan);
  plan.locked = locked;
  const removed = plan.remove.filter((r) => !retained.has(r.key));
  deps.metrics?.retentionLocked.set({ database }, locked.length);
  deps.metrics?.retentionDeleted.inc({ database }, removed.length);
  await deps.metrics?.refresh(deps.catalog, database); // the stored-truth gauges count what is left
  if (locked.length) logLocked(log, locked, 'retention');
  log.info({ kept: plan.keep.length, removed, retainedLocked: [...retained] }, 'retention applied');
  return plan;
}

/**
 * Manifests first: a backup stops being one before its data goes. A backup whose manifest the store
 * keeps locked keeps its data and drill records too (whole, restorable, tried again next run); one
 * whose data alone is locked is left as data without a manifest, a leftover a later run removes.
 */
export async function deleteManifestsFirst(
  storage: Storage,
  plan: RetentionPlan,
): Promise<{ locked: LockedObject[]; retained: Set<string> }> {
  const manifests = plan.objectKeys.filter((k) => k.endsWith(MANIFEST_SUFFIX));
  const first = await storage.delete(manifests);
  const kept = first.locked.map((l) => l.key.slice(0, -MANIFEST_SUFFIX.length));
  const rest = plan.objectKeys.filter(
    (k) => !k.endsWith(MANIFEST_SUFFIX) && !kept.some((d) => k === d || k.startsWith(`${d}.verify`)),
  );
  const second = await storage.delete(rest);
  const locked = [...first.locked, ...second.locked];
  const retained = new Set([...kept, ...second.locked.map((l) => l.key)]);
  return { locked, retained };
}

/** Locked objects are retained, not failed: said once per run, at info, with when the lock ends if known. */
export function logLocked(log: Logger, locked: LockedObject[], job: string): void {
  const until = lockedUntil(locked);
  log.info(
    { locked: locked.length, keys: locked.slice(0, 20).map((l) => l.key), until: until?.toISOString() },
    `${job} retained ${locked.length} object(s) the store keeps locked${until ? ` (until ${until.toISOString()} at the latest)` : ''}; they are deleted by a later run once the lock ends`,
  );
}
