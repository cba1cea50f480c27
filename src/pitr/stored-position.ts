/**
 * What the store already holds of a cluster's WAL, read once when this replica starts to lead: the
 * newest segment of each timeline (the next one stored must follow it, or the chain has a gap), the
 * newest timeline, and where the stored WAL ends (for the lag).
 */
import { parseWalKey } from './store-keys.js';
import type { WalStore } from './wal-object.js';
import { segmentStart } from './wal-name.js';

export interface StoredPosition {
  /** The newest finished segment stored, by timeline. */
  lastSegment: Map<number, bigint>;
  newestTimeline: number;
  /** The end of the newest WAL stored (segment or partial), if any. */
  end: bigint | undefined;
}

export async function readStoredPosition(ws: WalStore, segmentBytes: number): Promise<StoredPosition> {
  const objects = await ws.storage.list(`pitr/${ws.sysid}/wal/`);
  const lastSegment = new Map<number, bigint>();
  let newestTimeline = 0;
  let end: bigint | undefined;
  const further = (e: bigint) => {
    if (end === undefined || e > end) end = e;
  };
  for (const o of objects) {
    const w = parseWalKey(ws.sysid, o.key, segmentBytes);
    if (!w) continue;
    newestTimeline = Math.max(newestTimeline, w.file.timeline);
    if (w.file.kind !== 'segment') continue;
    const start = segmentStart(w.file.segNo, segmentBytes);
    if (w.partial) {
      further(start + BigInt(w.validBytes));
      continue;
    }
    further(start + BigInt(segmentBytes));
    const prev = lastSegment.get(w.file.timeline);
    if (prev === undefined || w.file.segNo > prev) lastSegment.set(w.file.timeline, w.file.segNo);
  }
  return { lastSegment, newestTimeline, end };
}
