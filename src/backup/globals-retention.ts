/**
 * Retention of the globals: the dumps' policy (BACKUP_RETENTION_DAYS, the minimum count, GFS picks)
 * applied to the globals by themselves, and on top of it the globals every stored dump needs are
 * kept: those of its run (the same tick), else the newest ones taken before it. Runs after the dumps'
 * retention, so the dumps still stored are the ones kept. Like the dumps', it deletes nothing while
 * the local clock disagrees with the store's or the database's, and never a misdated one.
 */
import type { Logger } from '../log/logger.js';
import type { CatalogListing, GoodBackup } from './catalog.js';
import { measureSkews, untrustedClock } from './clock-check.js';
import { listGlobals, type GlobalsListing, type GoodGlobals } from './globals-catalog.js';
import { MANIFEST_SUFFIX } from './naming.js';
import {
  deleteManifestsFirst,
  logLocked,
  planRetention,
  type RetentionDeps,
  type RetentionPlan,
  type RetentionPolicy,
} from './retention.js';

/** The globals a dump needs: those of its run, else the newest taken before it started (else the oldest). */
export function globalsFor(dump: GoodBackup, globals: GoodGlobals[]): GoodGlobals | undefined {
  const trusted = globals.filter((g) => !g.suspect);
  const tick = dump.manifest.tick;
  if (tick) {
    const same = trusted.find((g) => g.manifest.tick === tick);
    if (same) return same;
  }
  // newest first: the newest taken before it, else (a dump older than any globals) the oldest after it
  return trusted.find((g) => g.at.getTime() <= dump.at.getTime()) ?? trusted.at(-1);
}

export function planGlobalsRetention(
  listing: GlobalsListing,
  dumps: GoodBackup[],
  policy: RetentionPolicy,
  now: Date,
): RetentionPlan {
  // the dumps' policy, on the globals as if they were one database's backups
  const asBackups: CatalogListing = {
    good: listing.good.map(
      (g) =>
        ({
          key: g.key,
          at: g.at,
          ...(g.suspect ? { suspect: { reason: 'future_dated', detail: g.suspect } } : {}),
        }) as GoodBackup,
    ),
    incomplete: listing.incomplete,
  };
  const base = planRetention(asBackups, policy, now);
  const needed = new Map<string, string[]>();
  for (const d of dumps) {
    const g = globalsFor(d, listing.good);
    if (g) needed.set(g.key, [...(needed.get(g.key) ?? []), d.key]);
  }
  const plan: RetentionPlan = { keep: [...base.keep], remove: [], objectKeys: [] };
  for (const r of base.remove) {
    const by = needed.get(r.key);
    if (by) {
      plan.keep.push({
        key: r.key,
        why: [`needed by ${by.slice(0, 3).join(', ')}${by.length > 3 ? ', ...' : ''}`],
      });
      continue;
    }
    plan.remove.push(r);
    // a leftover is one object; good globals are the data and its manifest
    plan.objectKeys.push(r.key);
    if (!r.why.startsWith('incomplete')) plan.objectKeys.push(r.key + MANIFEST_SUFFIX);
  }
  return plan;
}

export async function applyGlobalsRetention(
  deps: RetentionDeps,
  databases: readonly string[],
  policy: RetentionPolicy,
  opts: { dryRun?: boolean; now?: Date } = {},
): Promise<RetentionPlan> {
  const log: Logger = deps.logger.child({ job: 'retention', globals: true });
  // a failed listing throws: nothing is deleted
  const listing = await listGlobals(deps.catalog);
  const dumps: GoodBackup[] = [];
  for (const db of databases) dumps.push(...(await deps.catalog.list(db)).good);
  const plan = planGlobalsRetention(listing, dumps, policy, opts.now ?? new Date());
  if (plan.objectKeys.length === 0 || opts.dryRun) {
    if (!opts.dryRun) deps.metrics?.globalsRetentionLocked.set(0);
    log.info(
      { dryRun: !!opts.dryRun, keep: plan.keep.length, remove: plan.remove.map((r) => r.key) },
      'globals retention planned',
    );
    return plan;
  }
  const skews = await measureSkews({ storage: deps.catalog.storage, databaseClock: deps.databaseClock });
  const distrust = untrustedClock(skews, deps.clockToleranceMs, deps.catalog.storage.clockMayBeLocal);
  if (distrust) {
    plan.skipped = `${distrust.text}: nothing was deleted`;
    log.error(
      { skews, wouldRemove: plan.remove.map((r) => r.key) },
      `globals retention skipped: ${plan.skipped}`,
    );
    return plan;
  }
  // as for the dumps: manifests first, and what the store keeps locked is retained, not removed
  const { locked, retained } = await deleteManifestsFirst(deps.catalog.storage, plan);
  plan.locked = locked;
  deps.metrics?.globalsRetentionLocked.set(locked.length);
  if (locked.length) logLocked(log, locked, 'globals retention');
  log.info(
    {
      kept: plan.keep.length,
      removed: plan.remove.filter((r) => !retained.has(r.key)),
      retainedLocked: [...retained],
    },
    'globals retention applied',
  );
  return plan;
}
