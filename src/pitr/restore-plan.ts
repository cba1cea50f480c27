/**
 * Which base backup a restore starts from, judged from the store's listing alone: the newest one
 * consistent before the target whose WAL chain reaches its stop (and, for a target in time, past the
 * target as far as the store can tell). A target outside what can be restored is refused with the
 * window that can be, before anything is written.
 */
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import {
  newestTimeline,
  timelinePath,
  walChain,
  type Chain,
  type GoodBase,
  type PitrListing,
} from './pitr-catalog.js';
import type { TimelineSwitch } from './wal-name.js';
import { formatLsn, parseLsn } from './wal-name.js';

export type RestoreTarget =
  /** `micros`: the microseconds (0–999) past `time`'s millisecond, which a Date cannot hold. */
  | { kind: 'time'; time: Date; micros?: number }
  | { kind: 'lsn'; lsn: bigint }
  | { kind: 'name'; name: string }
  | { kind: 'latest' };

export interface RestorePlan {
  base: GoodBase;
  chain: Chain;
  timeline: number;
}

export interface RestoreWindow {
  timeline: number;
  /** When the oldest usable base backup became consistent. */
  earliest?: Date;
  /** Approximate: when the newest stored WAL object of the timeline's path was written (the store's clock). */
  latest?: Date;
  newestWal?: string;
}

/** Base backups whose WAL chain reaches their stop along the newest timeline's path, newest first. */
export function usableBases(
  listing: PitrListing,
  histories: Map<number, TimelineSwitch[]>,
): Array<{ base: GoodBase; chain: Chain }> {
  const path = timelinePath(newestTimeline(listing), histories);
  return listing.bases
    .map((base) => ({ base, chain: walChain(listing, base.manifest, path) }))
    .filter((b) => b.chain.consistent);
}

export function restoreWindow(listing: PitrListing, histories: Map<number, TimelineSwitch[]>): RestoreWindow {
  const timeline = newestTimeline(listing);
  const usable = usableBases(listing, histories);
  const oldest = usable.at(-1);
  let latest: { at: Date; name: string } | undefined;
  for (const step of timelinePath(timeline, histories)) {
    for (const w of listing.segments.get(step.timeline)?.values() ?? [])
      if (!latest || w.lastModified > latest.at) latest = { at: w.lastModified, name: w.file.name };
  }
  for (const list of listing.partials.values())
    for (const w of list)
      if (!latest || w.lastModified > latest.at)
        latest = { at: w.lastModified, name: `${w.file.name}.partial` };
  return {
    timeline,
    ...(oldest ? { earliest: oldest.base.consistentAt } : {}),
    ...(latest ? { latest: latest.at, newestWal: latest.name } : {}),
  };
}

function windowText(w: RestoreWindow): string {
  if (!w.earliest) return 'nothing can be restored (no base backup with its WAL)';
  return `restorable: from ${w.earliest.toISOString()} to about ${w.latest?.toISOString() ?? w.earliest.toISOString()} (timeline ${w.timeline}; the end is when the newest WAL object, ${w.newestWal ?? '-'}, was stored)`;
}

export function planRestore(
  listing: PitrListing,
  histories: Map<number, TimelineSwitch[]>,
  target: RestoreTarget,
): RestorePlan {
  const usable = usableBases(listing, histories);
  const window = restoreWindow(listing, histories);
  const refuse = (what: string) =>
    new OperatorError(`cannot restore ${what}: ${windowText(window)}`, {
      exitCode: EXIT.DATAERR,
      hint: 'choose a target inside the window (`pg-maintd pitr list`); `pg-maintd pitr verify` names any gap in the WAL',
    });
  if (usable.length === 0) {
    const gap = listing.bases
      .map((b) => walChain(listing, b.manifest, timelinePath(window.timeline, histories)).gap)
      .find(Boolean);
    throw new OperatorError(
      `cannot restore: no base backup in the store has the WAL it needs${gap ? ` (segment ${gap.segment} is missing)` : ''}`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'take a base backup (`pg-maintd basebackup`) while WAL is archived; `pg-maintd pitr list` shows what is stored',
      },
    );
  }
  let pick: { base: GoodBase; chain: Chain } | undefined;
  switch (target.kind) {
    case 'latest':
      pick = usable[0];
      break;
    case 'name':
      // where a restore point lies is not known here: the oldest base sees every one after it
      pick = usable.at(-1);
      break;
    case 'lsn':
      pick = usable.find((b) => parseLsn(b.base.manifest.stopLsn)! <= target.lsn);
      if (!pick) throw refuse(`to LSN ${formatLsn(target.lsn)}, before the oldest base backup's end`);
      break;
    case 'time':
      pick = usable.find((b) => b.base.consistentAt.getTime() <= target.time.getTime());
      if (!pick)
        throw refuse(`to ${target.time.toISOString()}, before the oldest base backup became consistent`);
      if (window.latest && target.time.getTime() > window.latest.getTime())
        throw refuse(`to ${target.time.toISOString()}, after the newest stored WAL`);
      break;
  }
  const chosen = pick!;
  if (chosen.chain.gap) {
    const lastAt = chosen.chain.last?.object.lastModified;
    if (target.kind === 'latest' || (target.kind === 'time' && (!lastAt || target.time > lastAt)))
      throw new OperatorError(
        `cannot restore ${target.kind === 'latest' ? 'to the latest' : `to ${target.time.toISOString()}`}: WAL segment ${chosen.chain.gap.segment} is missing from the store (a gap in the chain from ${chosen.base.key}); recovery cannot pass it`,
        {
          exitCode: EXIT.DATAERR,
          hint: `restore to a target before the gap${lastAt ? ` (up to about ${lastAt.toISOString()})` : ''}, or from a base backup taken after it`,
        },
      );
  }
  return { base: chosen.base, chain: chosen.chain, timeline: window.timeline };
}
