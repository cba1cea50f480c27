/**
 * What `pitr list` and `pitr verify` report, from the store's listing: base backups, WAL per
 * timeline, the restorable window, leftovers, and for each base backup how far its WAL chain
 * reaches and where its first gap is.
 */
import type { Storage } from '../backup/storage/storage.js';
import type { Signer } from '../backup/signing.js';
import { listPitr, loadHistories, newestTimeline, timelinePath, walChain } from './pitr-catalog.js';
import { restoreWindow } from './restore-plan.js';
import { segmentName } from './wal-name.js';

export interface PitrSummary {
  systemIdentifier: string;
  storage: string;
  bases: Array<{
    key: string;
    timeline: number;
    startLsn: string;
    stopLsn: string;
    consistentAt: string;
    sizeBytes: number;
    trigger: string;
    /** The age recipients it is encrypted to; absent when stored plain. */
    encryptedTo?: string[];
    walReachesTo?: string;
    consistent: boolean;
    gap?: string;
  }>;
  wal: Array<{
    timeline: number;
    first: string;
    last: string;
    segments: number;
    /** How many of the segments are stored encrypted (age). */
    encrypted: number;
    partials: number;
  }>;
  histories: number[];
  window: {
    timeline: number;
    earliest?: string;
    latest?: string;
    latestIsApproximate: true;
    newestWal?: string;
  };
  leftovers: Array<{ key: string; why: string }>;
  drills: string[];
}

export async function summarizePitr(storage: Storage, sysid: string, signer?: Signer): Promise<PitrSummary> {
  const listing = await listPitr(storage, sysid, { signer });
  const histories = await loadHistories(storage, listing, { signer });
  const path = timelinePath(newestTimeline(listing), histories);
  const bytes = listing.segmentBytes;
  const window = restoreWindow(listing, histories);
  const partialsByTl = new Map<number, number>();
  for (const list of listing.partials.values())
    for (const p of list.slice(0, 1))
      partialsByTl.set(p.file.timeline, (partialsByTl.get(p.file.timeline) ?? 0) + 1);
  return {
    systemIdentifier: sysid,
    storage: storage.description,
    bases: listing.bases.map((b) => {
      const chain = walChain(listing, b.manifest, path);
      return {
        key: b.key,
        timeline: b.manifest.timeline,
        startLsn: b.manifest.startLsn,
        stopLsn: b.manifest.stopLsn,
        consistentAt: b.consistentAt.toISOString(),
        sizeBytes: b.manifest.size,
        trigger: b.manifest.trigger,
        ...(b.manifest.encryption ? { encryptedTo: b.manifest.encryption.recipients } : {}),
        ...(chain.last ? { walReachesTo: segmentName(chain.last.timeline, chain.last.segNo, bytes) } : {}),
        consistent: chain.consistent,
        ...(chain.gap ? { gap: chain.gap.segment } : {}),
      };
    }),
    wal: [...listing.segments.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([tl, segs]) => {
        const nos = [...segs.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        return {
          timeline: tl,
          first: segmentName(tl, nos[0]!, bytes),
          last: segmentName(tl, nos.at(-1)!, bytes),
          segments: nos.length,
          encrypted: [...segs.values()].filter((w) => w.storedTag).length,
          partials: partialsByTl.get(tl) ?? 0,
        };
      }),
    histories: [...listing.histories.keys()].sort((a, b) => a - b),
    window: {
      timeline: window.timeline,
      ...(window.earliest ? { earliest: window.earliest.toISOString() } : {}),
      ...(window.latest ? { latest: window.latest.toISOString() } : {}),
      latestIsApproximate: true,
      ...(window.newestWal ? { newestWal: window.newestWal } : {}),
    },
    leftovers: listing.leftovers.map((l) => ({ key: l.key, why: l.why })),
    drills: listing.drills.map((d) => d.key),
  };
}

export function renderSummary(s: PitrSummary): string {
  const out = [
    `point-in-time recovery of cluster ${s.systemIdentifier} in ${s.storage}`,
    '',
    'base backups (newest first):',
  ];
  if (s.bases.length === 0) out.push('  none');
  for (const b of s.bases)
    out.push(
      `  ${b.key}  timeline ${b.timeline}  ${b.startLsn} .. ${b.stopLsn}  consistent at ${b.consistentAt}  ${b.sizeBytes} bytes${b.encryptedTo ? `  encrypted (age, to ${b.encryptedTo.join(', ')})` : ''}${b.consistent ? '' : '  NOT RESTORABLE (its WAL is missing)'}${b.gap ? `  gap at ${b.gap}` : ''}`,
    );
  out.push('', 'WAL by timeline:');
  if (s.wal.length === 0) out.push('  none');
  for (const w of s.wal)
    out.push(
      `  timeline ${w.timeline}: ${w.first} .. ${w.last} (${w.segments} segments${w.encrypted ? `, ${w.encrypted === w.segments ? 'all' : w.encrypted} encrypted` : ''}${w.partials ? `, ${w.partials} partial` : ''})`,
    );
  out.push(
    '',
    s.window.earliest
      ? `restorable window (timeline ${s.window.timeline}): ${s.window.earliest} .. about ${s.window.latest ?? s.window.earliest} (the end is approximate: when the newest WAL object, ${s.window.newestWal ?? '-'}, was stored)`
      : 'restorable window: none (no base backup with the WAL it needs)',
  );
  if (s.leftovers.length) {
    out.push('', 'leftovers (not used by restores):');
    for (const l of s.leftovers) out.push(`  ${l.key}: ${l.why}`);
  }
  return `${out.join('\n')}\n`;
}
