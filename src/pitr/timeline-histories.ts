/**
 * Each timeline's history (its ancestors and where it branched), from the stored history files,
 * without the identity: a plain one is read and checked against its tag; an encrypted one is its
 * parent's history followed by the switch its name carries (store-keys.ts), as PostgreSQL writes a
 * new timeline's history, once its stored bytes match the tag in its name.
 */
import type { StoredWal } from './store-keys.js';
import { parseHistory, type TimelineSwitch } from './wal-name.js';
import { checkStoredWal, fetchWalFile, type WalStore } from './wal-object.js';

export async function readHistories(
  ws: WalStore,
  objects: StoredWal[],
  signal?: AbortSignal,
): Promise<Map<number, TimelineSwitch[]>> {
  const out = new Map<number, TimelineSwitch[]>();
  const encrypted: StoredWal[] = [];
  for (const obj of objects) {
    if (obj.file.kind !== 'history') continue;
    if (obj.lineage) {
      encrypted.push(obj);
      continue;
    }
    const content = await fetchWalFile(ws, obj, signal);
    const parsed = parseHistory(content.toString('utf8'));
    if (!parsed) throw new Error(`history file ${obj.key} does not parse as a timeline history`);
    out.set(obj.file.timeline, parsed);
  }
  // a parent is always an older timeline (the key parser refuses any other): oldest first
  encrypted.sort((a, b) => a.file.timeline - b.file.timeline);
  for (const obj of encrypted) {
    await checkStoredWal(ws, obj, signal);
    const { parent, switchLsn } = obj.lineage!;
    const before = parent === 1 ? (out.get(1) ?? []) : out.get(parent);
    if (!before)
      throw new Error(
        `history file ${obj.key} says its timeline branched from timeline ${parent}, whose history file is not stored`,
      );
    out.set(obj.file.timeline, [...before, { parent, switchLsn }]);
  }
  return out;
}
