/**
 * What the store says about point-in-time recovery, as numbers: the restorable window (from the
 * oldest base backup whose WAL reaches its consistency point to the last WAL stored after the newest
 * one), whether the chain has a gap, and the newest base backup. Every replica computes the same
 * from the same store, so the gauges are stored truth, not this process's memory. `pitrSummary` is
 * the same picture for `pitr list` and the status page.
 */
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import type { PitrMetrics } from './metrics.js';
import {
  listPitr,
  loadHistories,
  newestTimeline,
  timelinePath,
  walChain,
  type Chain,
  type GoodBase,
  type PitrListing,
} from './pitr-catalog.js';
import type { TimelineSwitch } from './wal-name.js';

export interface PitrBaseSummary {
  key: string;
  timeline: number;
  consistentAt: Date;
  finishedAt: Date;
  durationSeconds: number;
  size: number;
  trigger: GoodBase['manifest']['trigger'];
  /** Whether the WAL along the newest timeline's path reaches this base backup's consistency point. */
  consistent: boolean;
  /** How far that WAL reaches (the last object's store time, a partial included). */
  reachesTo?: Date;
  gap?: { timeline: number; segment: string };
}

export interface PitrWindow {
  start: Date;
  end: Date;
}

export interface PitrSummary {
  newestTimeline: number;
  /** Newest first. */
  bases: PitrBaseSummary[];
  /** The restorable window along the newest timeline, when any base backup is usable. */
  window?: PitrWindow;
  /** The same for each timeline the store knows of (ending on that timeline). */
  windowByTimeline: Map<number, PitrWindow>;
  /** Distinct gaps in the chains from the base backups along the newest timeline's path. */
  gaps: Array<{ timeline: number; segment: string }>;
  /** Base-backup-like objects that are not usable (unfinished, or failing their checks). */
  leftovers: number;
}

function reach(chain: Chain): Date | undefined {
  const times = [chain.last?.object.lastModified, chain.partial?.lastModified].filter(
    (d): d is Date => d !== undefined,
  );
  return times.length ? new Date(Math.max(...times.map((d) => d.getTime()))) : undefined;
}

/** The window along the path to `timeline`: oldest consistent base's consistency to newest's reach. */
function windowAlong(
  listing: PitrListing,
  histories: Map<number, TimelineSwitch[]>,
  timeline: number,
): { window?: PitrWindow; chains: Map<string, Chain> } {
  const path = timelinePath(timeline, histories);
  const chains = new Map(listing.bases.map((b) => [b.key, walChain(listing, b.manifest, path)]));
  const usable = listing.bases.filter((b) => chains.get(b.key)!.consistent);
  const oldest = usable.at(-1);
  const newest = usable[0];
  if (!oldest || !newest) return { chains };
  const end = reach(chains.get(newest.key)!) ?? newest.consistentAt;
  // WAL stored before the base backup ended cannot extend the window past its consistency point
  const window = { start: oldest.consistentAt, end: end < newest.consistentAt ? newest.consistentAt : end };
  return { window, chains };
}

export function pitrSummary(listing: PitrListing, histories: Map<number, TimelineSwitch[]>): PitrSummary {
  const newest = newestTimeline(listing);
  const { window, chains } = windowAlong(listing, histories, newest);
  const timelines = new Set<number>([...listing.segments.keys(), ...listing.histories.keys(), newest]);
  const windowByTimeline = new Map<number, PitrWindow>();
  for (const tli of [...timelines].sort((a, b) => a - b)) {
    const w = tli === newest ? window : windowAlong(listing, histories, tli).window;
    if (w) windowByTimeline.set(tli, w);
  }
  const gaps = new Map<string, { timeline: number; segment: string }>();
  const bases = listing.bases.map((b): PitrBaseSummary => {
    const chain = chains.get(b.key)!;
    if (chain.gap) gaps.set(chain.gap.segment, chain.gap);
    const reachesTo = reach(chain);
    return {
      key: b.key,
      timeline: b.manifest.timeline,
      consistentAt: b.consistentAt,
      finishedAt: new Date(b.manifest.finishedAt),
      durationSeconds: b.manifest.durationSeconds,
      size: b.manifest.size,
      trigger: b.manifest.trigger,
      consistent: chain.consistent,
      ...(reachesTo ? { reachesTo } : {}),
      ...(chain.gap ? { gap: chain.gap } : {}),
    };
  });
  return {
    newestTimeline: newest,
    bases,
    ...(window ? { window } : {}),
    windowByTimeline,
    gaps: [...gaps.values()],
    leftovers: listing.leftovers.length,
  };
}

const seconds = (d: Date) => d.getTime() / 1000;

/** Sets the store-derived gauges; a value the store cannot give is removed, never left stale. */
export function refreshPitrMetrics(
  metrics: PitrMetrics,
  listing: PitrListing,
  histories: Map<number, TimelineSwitch[]>,
): PitrSummary {
  const s = pitrSummary(listing, histories);
  if (s.window) {
    metrics.windowStart.set(seconds(s.window.start));
    metrics.windowEnd.set(seconds(s.window.end));
  } else {
    metrics.windowStart.remove({});
    metrics.windowEnd.remove({});
  }
  // the newest base backup's chain: a gap there means restores to now cannot be done from it
  metrics.chainGap.set(s.bases[0]?.gap ? 1 : 0);
  const newestBase = s.bases[0];
  const oldestBase = s.bases.at(-1);
  if (newestBase && oldestBase) {
    metrics.baseLastSuccess.set(seconds(newestBase.finishedAt));
    metrics.baseLastDuration.set(newestBase.durationSeconds);
    metrics.baseLastSize.set(newestBase.size);
    metrics.baseOldest.set(seconds(oldestBase.finishedAt));
  } else {
    for (const g of [
      metrics.baseLastSuccess,
      metrics.baseLastDuration,
      metrics.baseLastSize,
      metrics.baseOldest,
    ])
      g.remove({});
  }
  return s;
}

/** Lists the store and sets the gauges from it (a listing that fails throws and changes nothing). */
export async function refreshStoreMetrics(
  metrics: PitrMetrics,
  storage: Storage,
  sysid: string,
  signer?: Signer,
): Promise<PitrSummary> {
  const listing = await listPitr(storage, sysid, { signer });
  const histories = await loadHistories(storage, listing, { signer });
  return refreshPitrMetrics(metrics, listing, histories);
}
