/**
 * What the store holds for one cluster's point-in-time recovery, read whole and judged: base backups
 * whose manifest is present, parses, is signed where signing is on, and matches its data object;
 * WAL segments, partials and history files by timeline; drill records. Then the WAL chain from a
 * base backup along the timelines: how far it reaches without a gap, and where the first gap is.
 * Nothing here trusts a name or a date it has not parsed.
 */
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import { errorMessage } from '../core/errors.js';
import { parseBaseManifest, type BaseManifest } from './base-manifest.js';
import {
  BASE_MANIFEST_SUFFIX,
  PITR_ROOT,
  parseBaseKey,
  parseDrillKey,
  parseWalKey,
  type StoredWal,
} from './store-keys.js';
import { readHistories } from './timeline-histories.js';
import {
  DEFAULT_SEGMENT_BYTES,
  parseLsn,
  segNoOf,
  segmentName,
  segmentStart,
  type TimelineSwitch,
} from './wal-name.js';

export type WalObject = StoredWal & { lastModified: Date; size: number };

export interface GoodBase {
  key: string;
  manifest: BaseManifest;
  /** From here on (the database server's clock when it had ended) the backup can be restored. */
  consistentAt: Date;
  lastModified: Date;
}

export interface PitrLeftover {
  key: string;
  why: string;
  lastModified: Date;
}

export interface PitrListing {
  sysid: string;
  segmentBytes: number;
  /** Newest first. */
  bases: GoodBase[];
  leftovers: PitrLeftover[];
  /** Finished segments by timeline, then segment number. */
  segments: Map<number, Map<bigint, WalObject>>;
  /** Partials by segment name, the largest first. */
  partials: Map<string, WalObject[]>;
  histories: Map<number, WalObject>;
  drills: Array<{ key: string; at: Date }>;
}

export interface PitrCatalogOptions {
  signer?: Signer;
}

/** Reads everything under pitr/<sysid>/; throws when the listing fails (never a partial picture). */
export async function listPitr(
  storage: Storage,
  sysid: string,
  o: PitrCatalogOptions = {},
): Promise<PitrListing> {
  const objects = await storage.list(`${PITR_ROOT}/${sysid}/`);
  const byKey = new Map(objects.map((x) => [x.key, x]));
  const bases: GoodBase[] = [];
  const leftovers: PitrLeftover[] = [];
  const drills: Array<{ key: string; at: Date }> = [];
  const walObjects: WalObject[] = [];
  for (const obj of objects) {
    const base = parseBaseKey(sysid, obj.key);
    if (base) {
      const judged = await judgeBase(
        storage,
        obj.key,
        obj.size,
        byKey.get(obj.key + BASE_MANIFEST_SUFFIX),
        sysid,
        o,
      );
      if ('manifest' in judged) bases.push({ ...judged, lastModified: obj.lastModified });
      else leftovers.push({ key: obj.key, why: judged.why, lastModified: obj.lastModified });
      continue;
    }
    const drill = parseDrillKey(sysid, obj.key);
    if (drill) {
      drills.push(drill);
      continue;
    }
    if (obj.key.endsWith(BASE_MANIFEST_SUFFIX)) {
      const data = obj.key.slice(0, -BASE_MANIFEST_SUFFIX.length);
      if (parseBaseKey(sysid, data) && !byKey.has(data))
        leftovers.push({ key: obj.key, why: 'manifest without data', lastModified: obj.lastModified });
      continue;
    }
    walObjects.push(
      ...[obj].flatMap((x) => {
        const w = parseWalKey(sysid, x.key);
        return w ? [{ ...w, lastModified: x.lastModified, size: x.size }] : [];
      }),
    );
  }
  bases.sort((a, b) => b.consistentAt.getTime() - a.consistentAt.getTime() || (a.key < b.key ? 1 : -1));
  const segmentBytes = bases[0]?.manifest.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  const segments = new Map<number, Map<bigint, WalObject>>();
  const partials = new Map<string, WalObject[]>();
  const histories = new Map<number, WalObject>();
  for (const w0 of walObjects) {
    // the segment size decides how a name maps to a position: parse again with the cluster's
    const w = { ...w0, ...(parseWalKey(sysid, w0.key, segmentBytes) ?? w0) } as WalObject;
    if (w.file.kind === 'history') {
      histories.set(w.file.timeline, w);
    } else if (w.partial) {
      const list = partials.get(w.file.name) ?? [];
      list.push(w);
      partials.set(w.file.name, list);
    } else {
      const tl = segments.get(w.file.timeline) ?? new Map<bigint, WalObject>();
      tl.set(w.file.segNo, w);
      segments.set(w.file.timeline, tl);
    }
  }
  for (const list of partials.values())
    list.sort((a, b) => (b.partial ? b.validBytes : 0) - (a.partial ? a.validBytes : 0));
  drills.sort((a, b) => b.at.getTime() - a.at.getTime());
  return { sysid, segmentBytes, bases, leftovers, segments, partials, histories, drills };
}

async function judgeBase(
  storage: Storage,
  key: string,
  size: number,
  manifestObject: { key: string } | undefined,
  sysid: string,
  o: PitrCatalogOptions,
): Promise<{ manifest: BaseManifest; consistentAt: Date; key: string } | { why: string }> {
  if (!manifestObject) return { why: 'no manifest (unfinished or failed)' };
  let manifest: BaseManifest;
  try {
    const raw = await storage.getSmall(manifestObject.key);
    if (!raw) return { why: 'manifest vanished' };
    manifest = parseBaseManifest(raw, manifestObject.key);
  } catch (err) {
    return { why: errorMessage(err) };
  }
  if (manifest.key !== key) return { why: `manifest names another object (${manifest.key})` };
  if (manifest.systemIdentifier !== sysid)
    return { why: `manifest is of another cluster (${manifest.systemIdentifier})` };
  if ((manifest.encryption !== undefined) !== key.endsWith('.age'))
    return {
      why: `manifest says the object is ${manifest.encryption ? 'encrypted' : 'plain'}, its name says otherwise`,
    };
  if (manifest.size !== size)
    return { why: `stored object has ${size} bytes, the manifest says ${manifest.size}` };
  if (o.signer) {
    const check = o.signer.check(manifest);
    if (check !== 'ok') return { why: `manifest signature ${check}` };
  }
  return { key, manifest, consistentAt: new Date(manifest.stopDatabaseTime) };
}

/** Each timeline's history (its ancestors and where it branched), read from the stored history files. */
export async function loadHistories(
  storage: Storage,
  listing: PitrListing,
  o: PitrCatalogOptions = {},
): Promise<Map<number, TimelineSwitch[]>> {
  return readHistories({ storage, sysid: listing.sysid, signer: o.signer }, [...listing.histories.values()]);
}

/** One step of a timeline path: the timeline, and the position where its successor branched off it. */
export interface PathStep {
  timeline: number;
  /** Undefined for the last timeline of the path. */
  endLsn?: bigint;
}

/** The path from the first timeline to `target`, from target's history (timeline 1 has none). */
export function timelinePath(target: number, histories: Map<number, TimelineSwitch[]>): PathStep[] {
  const h = histories.get(target) ?? [];
  return [...h.map((s) => ({ timeline: s.parent, endLsn: s.switchLsn })), { timeline: target }];
}

/** The newest timeline the store knows of (by history file or segment). */
export function newestTimeline(listing: PitrListing): number {
  let max = 1;
  for (const t of listing.histories.keys()) max = Math.max(max, t);
  for (const t of listing.segments.keys()) max = Math.max(max, t);
  return max;
}

export interface Chain {
  /** The last finished segment reached without a gap (undefined: not even the first). */
  last?: { timeline: number; segNo: bigint; object: WalObject };
  /** The largest partial of the segment after `last`, when there is one. */
  partial?: WalObject;
  /** Whether the chain reaches the base backup's stop position: the backup is consistent only then. */
  consistent: boolean;
  /** The first missing segment, when later WAL on the path exists beyond it. */
  gap?: { timeline: number; segment: string };
  /** How many finished segments the chain holds. */
  segments: number;
}

/**
 * Follows WAL from a base backup's start along `path` (the base's timeline must be on it): on every
 * timeline but the last, each segment before the one holding the switch position (recovery reads
 * that one from the new timeline); on the last, as far as segments follow each other.
 */
export function walChain(listing: PitrListing, base: BaseManifest, path: PathStep[]): Chain {
  const bytes = listing.segmentBytes;
  const startLsn = parseLsn(base.startLsn)!;
  const stopLsn = parseLsn(base.stopLsn)!;
  const stopSeg = segNoOf(stopLsn, bytes);
  // a partial of the stop segment makes the base consistent only if it holds WAL up to the stop position
  const stopReached = (p: WalObject | undefined) =>
    p?.partial === true && BigInt(p.validBytes) >= stopLsn - segmentStart(stopSeg, bytes);
  const from = path.findIndex(
    (s) => s.timeline === base.timeline && (s.endLsn === undefined || s.endLsn > startLsn),
  );
  const chain: Chain = { consistent: false, segments: 0 };
  if (from < 0) return chain;
  let segNo = segNoOf(startLsn, bytes);
  for (let i = from; i < path.length; i++) {
    const step = path[i]!;
    const onTl = listing.segments.get(step.timeline) ?? new Map<bigint, WalObject>();
    const endSeg = step.endLsn === undefined ? undefined : segNoOf(step.endLsn, bytes);
    while (endSeg === undefined || segNo < endSeg) {
      const obj = onTl.get(segNo);
      if (!obj) {
        if (endSeg !== undefined || laterExists(listing, path, i, segNo)) {
          chain.gap = { timeline: step.timeline, segment: segmentName(step.timeline, segNo, bytes) };
        }
        if (endSeg === undefined || chain.gap) {
          chain.partial = listing.partials.get(segmentName(step.timeline, segNo, bytes))?.[0];
          chain.consistent =
            (chain.last?.segNo ?? -1n) >= stopSeg ||
            (stopReached(chain.partial) && segNo === stopSeg && !chain.gap);
          return chain;
        }
      } else {
        chain.last = { timeline: step.timeline, segNo, object: obj };
        chain.segments++;
      }
      segNo++;
    }
  }
  chain.consistent = (chain.last?.segNo ?? -1n) >= stopSeg;
  return chain;
}

/** Whether any finished segment after `segNo` exists on the path from step `i` on. */
function laterExists(listing: PitrListing, path: PathStep[], i: number, segNo: bigint): boolean {
  for (let j = i; j < path.length; j++) {
    for (const n of listing.segments.get(path[j]!.timeline)?.keys() ?? []) if (n > segNo) return true;
  }
  return false;
}
