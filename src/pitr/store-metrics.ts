/**
 * The PITR metrics that describe the store rather than a run: the restorable window, whether the
 * WAL chain from the newest base backup has a gap, and the newest good base backup. Read from the
 * store's listing, so every replica reports the same whichever one took the backup.
 */
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import type { PitrMetrics } from './metrics.js';
import { listPitr, loadHistories, newestTimeline, timelinePath, walChain } from './pitr-catalog.js';
import { restoreWindow } from './restore-plan.js';

export async function refreshStoreMetrics(
  metrics: PitrMetrics,
  storage: Storage,
  sysid: string,
  signer?: Signer,
): Promise<void> {
  const listing = await listPitr(storage, sysid, { signer });
  const histories = await loadHistories(storage, listing, { signer });
  const window = restoreWindow(listing, histories);
  metrics.windowStart.set(window.earliest ? window.earliest.getTime() / 1000 : 0);
  metrics.windowEnd.set(window.latest && window.earliest ? window.latest.getTime() / 1000 : 0);
  const newest = listing.bases[0];
  if (!newest) {
    metrics.chainGap.set(0);
    return;
  }
  const chain = walChain(listing, newest.manifest, timelinePath(newestTimeline(listing), histories));
  metrics.chainGap.set(chain.gap ? 1 : 0);
  metrics.baseLastSuccess.set(Date.parse(newest.manifest.finishedAt) / 1000);
  metrics.baseLastDuration.set(newest.manifest.durationSeconds);
  metrics.baseLastSize.set(newest.manifest.size);
}
