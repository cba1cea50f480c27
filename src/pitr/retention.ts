/**
 * Point-in-time recovery's retention: any second of the last PITR_RETENTION_DAYS stays restorable.
 * Kept: the newest base backup that was consistent before the window began (it covers the window's
 * start) and whose WAL chain reaches its consistency point, every later base backup, and all WAL
 * from the oldest kept base backup's start on (on every timeline; history files always). Deleted:
 * older base backups (manifest first, then data, so a half-done deletion leaves data without a
 * manifest, which nothing ever restores from, never a manifest that points at nothing), WAL before
 * the oldest kept start, partials superseded by their finished segment, and leftovers past a grace.
 *
 * Nothing is deleted when the listing fails, when the local clock disagrees with the store's or the
 * database server's (an age is only as good as the clock), and no WAL is deleted while the chain
 * from the oldest kept base backup has a gap: the store's picture is then not what retention
 * assumes, and a person should look before anything goes.
 */
import type { Signer } from '../backup/signing.js';
import { measureSkews, untrustedClock } from '../backup/clock-check.js';
import { logLocked } from '../backup/retention.js';
import type { LockedObject, Storage } from '../backup/storage/storage.js';
import type { Logger } from '../log/logger.js';
import { BASE_MANIFEST_SUFFIX } from './store-keys.js';
import { refreshPitrMetrics } from './store-metrics.js';
import type { PitrMetrics } from './metrics.js';
import {
  listPitr,
  loadHistories,
  newestTimeline,
  timelinePath,
  walChain,
  type GoodBase,
  type PitrListing,
  type WalObject,
} from './pitr-catalog.js';
import { parseLsn, segNoOf, type TimelineSwitch } from './wal-name.js';

const DAY = 86_400_000;
/** A partial whose finished segment is stored is kept this long (a restore may be reading it). */
const SUPERSEDED_PARTIAL_MS = 3_600_000;
/** The leftovers pitr-catalog.ts reports that retention may remove: pieces of a run, not a forgery. */
const REMOVABLE_LEFTOVER = /^(no manifest|manifest without data)/;

export interface PitrRetentionDeps {
  storage: Storage;
  sysid: string;
  signer?: Signer | undefined;
  logger: Logger;
  metrics?: PitrMetrics | undefined;
  /** Local clock against store and database: beyond this nothing is deleted (CLOCK_SKEW_TOLERANCE). */
  clockToleranceMs: number;
  /** The database server's clock, the second reference besides the store's. */
  databaseClock?: (() => Promise<Date | undefined>) | undefined;
  /** Leftovers of failed runs older than this are deleted (BACKUP_INCOMPLETE_GRACE). */
  incompleteGraceMs: number;
}

export interface PitrRetentionPlan {
  keep: Array<{ key: string; why: string }>;
  /** Base backups to delete (their manifest, then their data object). */
  removeBases: Array<{ key: string; why: string }>;
  /** WAL segments and partials to delete. */
  removeWal: string[];
  removeLeftovers: Array<{ key: string; why: string }>;
  /** Objects left alone that a person should look at (a manifest that fails its checks). */
  untrusted: Array<{ key: string; why: string }>;
  /** Why no WAL is deleted, when none is. */
  walBlocked?: string;
  /** Why nothing at all was deleted, when the plan was not carried out. */
  skipped?: string;
  /** Objects the store refused to delete because they are locked: retained, tried again next run. */
  locked?: LockedObject[];
}

export function planPitrRetention(
  listing: PitrListing,
  histories: Map<number, TimelineSwitch[]>,
  o: { retentionDays: number; incompleteGraceMs: number; now: Date },
): PitrRetentionPlan & { walBlockedByGap: boolean } {
  const now = o.now.getTime();
  const cutoff = now - o.retentionDays * DAY;
  const path = timelinePath(newestTimeline(listing), histories);
  const chains = new Map(listing.bases.map((b) => [b.key, walChain(listing, b.manifest, path)]));
  // newest first: the first consistent one before the cutoff covers the window's start
  const coverIdx = listing.bases.findIndex(
    (b) => b.consistentAt.getTime() <= cutoff && chains.get(b.key)!.consistent,
  );
  const kept: GoodBase[] = coverIdx < 0 ? listing.bases : listing.bases.slice(0, coverIdx + 1);
  const plan: PitrRetentionPlan & { walBlockedByGap: boolean } = {
    keep: kept.map((b, i) => ({
      key: b.key,
      why:
        i === coverIdx
          ? `covers the start of the ${o.retentionDays}-day window`
          : coverIdx < 0
            ? 'no consistent base backup is older than the window'
            : 'within the window',
    })),
    removeBases:
      coverIdx < 0
        ? []
        : listing.bases.slice(coverIdx + 1).map((b) => ({
            key: b.key,
            why: `older than ${listing.bases[coverIdx]!.key}, which covers the window`,
          })),
    removeWal: [],
    removeLeftovers: [],
    untrusted: [],
    walBlockedByGap: false,
  };
  for (const l of listing.leftovers) {
    if (!REMOVABLE_LEFTOVER.test(l.why)) plan.untrusted.push({ key: l.key, why: l.why });
    else if (now - l.lastModified.getTime() > o.incompleteGraceMs)
      plan.removeLeftovers.push({ key: l.key, why: l.why });
  }

  const oldest = kept.at(-1);
  if (!oldest) {
    plan.walBlocked = 'no good base backup is stored, so no WAL is known to be unneeded';
    return plan;
  }
  const chain = chains.get(oldest.key)!;
  if (chain.gap) {
    plan.walBlockedByGap = true;
    plan.walBlocked = `the WAL chain from base backup ${oldest.key} has a gap at ${chain.gap.segment} (timeline ${chain.gap.timeline})`;
    return plan;
  }
  if (!chain.consistent) {
    plan.walBlocked = `the WAL chain from base backup ${oldest.key} does not reach its consistency point yet`;
    return plan;
  }
  // a segment size differing between base backups (fixed at initdb) makes positions of names
  // ambiguous: which segment is before which cannot be told, so none goes
  const odd = listing.bases.find((b) => b.manifest.segmentBytes !== listing.segmentBytes);
  if (odd) {
    plan.walBlocked = `base backup ${odd.key} has ${odd.manifest.segmentBytes}-byte WAL segments, the newest ${listing.segmentBytes}`;
    return plan;
  }
  // every kept base backup's start, not only the oldest's: one on another timeline may start earlier
  let floor: bigint | undefined;
  for (const b of kept) {
    const s = segNoOf(parseLsn(b.manifest.startLsn)!, listing.segmentBytes);
    if (floor === undefined || s < floor) floor = s;
  }
  for (const onTl of listing.segments.values())
    for (const [segNo, w] of onTl) if (segNo < floor!) plan.removeWal.push(w.key);
  for (const list of listing.partials.values())
    for (const w of list) if (partialRemovable(listing, w, floor!, now)) plan.removeWal.push(w.key);
  return plan;
}

function partialRemovable(listing: PitrListing, w: WalObject, floor: bigint, now: number): boolean {
  if (w.file.kind !== 'segment') return false;
  if (w.file.segNo < floor) return true;
  const finished = listing.segments.get(w.file.timeline)?.has(w.file.segNo) ?? false;
  return finished && now - w.lastModified.getTime() > SUPERSEDED_PARTIAL_MS;
}

export async function applyPitrRetention(
  deps: PitrRetentionDeps,
  opts: { retentionDays: number; dryRun?: boolean; now?: Date },
): Promise<PitrRetentionPlan> {
  const log = deps.logger.child({ job: 'pitr-retention', sysid: deps.sysid });
  const signer = deps.signer ? { signer: deps.signer } : {};
  // a failed listing, or a history file that cannot be read, throws here: nothing is deleted
  const listing = await listPitr(deps.storage, deps.sysid, signer);
  const histories = await loadHistories(deps.storage, listing, signer);
  deps.metrics?.retentionDays.set(opts.retentionDays);
  const { walBlockedByGap, ...plan } = planPitrRetention(listing, histories, {
    retentionDays: opts.retentionDays,
    incompleteGraceMs: deps.incompleteGraceMs,
    now: opts.now ?? new Date(),
  });
  if (walBlockedByGap)
    log.error(
      { walBlocked: plan.walBlocked },
      `PITR retention deletes no WAL: ${plan.walBlocked}; restores cannot pass it. Take a new base backup (pg-maintd pitr basebackup): once it is older than PITR_RETENTION_DAYS, the WAL before it goes`,
    );
  else if (plan.walBlocked)
    log.info({ walBlocked: plan.walBlocked }, 'PITR retention deletes no WAL this time');
  for (const u of plan.untrusted)
    log.warn(
      { key: u.key, why: u.why },
      'PITR retention leaves an untrusted base backup alone: it is never restored from nor deleted; remove it by hand once you know where it came from',
    );

  const total = plan.removeBases.length + plan.removeWal.length + plan.removeLeftovers.length;
  if (total > 0) {
    const skews = await measureSkews({ storage: deps.storage, databaseClock: deps.databaseClock });
    const distrust = untrustedClock(skews, deps.clockToleranceMs, deps.storage.clockMayBeLocal);
    if (distrust) {
      plan.skipped = `${distrust.text}: nothing was deleted (CLOCK_SKEW_TOLERANCE is ${deps.clockToleranceMs / 1000} s)`;
      deps.metrics?.retentionBlocked.set(1);
      log.error(
        { skews, wouldRemove: plan.removeBases.map((b) => b.key), wal: plan.removeWal.length },
        distrust.reason === 'clock_skew'
          ? `PITR retention skipped: ${plan.skipped}; fix the clock (NTP) of this host or of the other side`
          : `PITR retention skipped: ${plan.skipped}; it runs again once the database answers`,
      );
      return plan;
    }
  }
  deps.metrics?.retentionBlocked.set(walBlockedByGap ? 1 : 0);
  if (opts.dryRun || total === 0) {
    if (!opts.dryRun) deps.metrics?.retentionLocked.set(0);
    log.info(
      {
        dryRun: !!opts.dryRun,
        keep: plan.keep.length,
        removeBases: plan.removeBases.map((b) => b.key),
        removeWal: plan.removeWal.length,
      },
      'PITR retention planned',
    );
    if (deps.metrics) refreshPitrMetrics(deps.metrics, listing, histories);
    return plan;
  }
  const locked: LockedObject[] = [];
  let basesRemoved = plan.removeBases;
  if (plan.removeBases.length) {
    // manifests first: a base backup stops being one before its data goes; one whose manifest the
    // store keeps locked keeps its data (it is still whole), and both are tried again next run
    const first = await deps.storage.delete(plan.removeBases.map((b) => b.key + BASE_MANIFEST_SUFFIX));
    const keptManifests = new Set(first.locked.map((l) => l.key));
    basesRemoved = plan.removeBases.filter((b) => !keptManifests.has(b.key + BASE_MANIFEST_SUFFIX));
    const second = await deps.storage.delete(basesRemoved.map((b) => b.key));
    locked.push(...first.locked, ...second.locked);
    // data whose manifest went but that is itself locked is a leftover a later run removes
    deps.metrics?.retentionDeleted.inc({ kind: 'basebackup' }, basesRemoved.length);
  }
  if (plan.removeLeftovers.length) {
    const r = await deps.storage.delete(plan.removeLeftovers.map((l) => l.key));
    locked.push(...r.locked);
    deps.metrics?.retentionDeleted.inc({ kind: 'leftover' }, plan.removeLeftovers.length - r.locked.length);
  }
  if (plan.removeWal.length) {
    const r = await deps.storage.delete(plan.removeWal);
    locked.push(...r.locked);
    deps.metrics?.retentionDeleted.inc({ kind: 'wal' }, plan.removeWal.length - r.locked.length);
  }
  plan.locked = locked;
  deps.metrics?.retentionLocked.set(locked.length);
  if (locked.length) logLocked(log, locked, 'PITR retention');
  log.info(
    {
      kept: plan.keep,
      removedBases: basesRemoved,
      removedWal: plan.removeWal.length,
      retainedLocked: locked.length,
      removedLeftovers: plan.removeLeftovers.map((l) => l.key),
    },
    'PITR retention applied',
  );
  if (deps.metrics) {
    // the stored-truth gauges describe what is left
    const after = await listPitr(deps.storage, deps.sysid, signer);
    refreshPitrMetrics(deps.metrics, after, await loadHistories(deps.storage, after, signer));
  }
  return plan;
}
