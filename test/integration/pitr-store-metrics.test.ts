// The PITR gauges read from a hand-made store: the restorable window, the chain gap, the newest and
// oldest base backup; absent (never 0, a date in 1970) while the store holds no base backup.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { PitrMetrics } from '../../src/pitr/metrics.js';
import { listPitr, loadHistories } from '../../src/pitr/pitr-catalog.js';
import { pitrSummary, refreshPitrMetrics } from '../../src/pitr/store-metrics.js';
import { CraftedPitrStore, daysAgo, seg } from '../support/crafted-pitr.js';

async function read(store: CraftedPitrStore) {
  const listing = await listPitr(store.storage, store.sysid);
  return { listing, histories: await loadHistories(store.storage, listing) };
}

function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

const secs = (d: Date) => d.getTime() / 1000;
const NOW = Date.now();

describe('PITR store metrics', () => {
  it('are absent while the store holds no base backup', async () => {
    const registry = new Registry();
    const metrics = new PitrMetrics(registry);
    let text = await registry.metrics();
    for (const name of [
      'pgmaintd_pitr_window_start_timestamp_seconds',
      'pgmaintd_pitr_window_end_timestamp_seconds',
      'pgmaintd_basebackup_last_success_timestamp_seconds',
      'pgmaintd_basebackup_oldest_timestamp_seconds',
    ])
      expect(sample(text, name), name).toBeUndefined();
    // the drill's dates too: read from the store, absent until then
    expect(sample(text, 'pgmaintd_pitr_drill_last_success_timestamp_seconds')).toBeUndefined();
    metrics.setArchiveMode('stream');
    expect(await registry.metrics()).toMatch(
      /^pgmaintd_wal_archive_mode\{mode="off"\} 0\npgmaintd_wal_archive_mode\{mode="stream"\} 1\npgmaintd_wal_archive_mode\{mode="command"\} 0$/m,
    );
    const store = new CraftedPitrStore();
    await store.segments(1, 1, 3);
    const { listing, histories } = await read(store);
    const s = refreshPitrMetrics(metrics, listing, histories);
    expect(s.window).toBeUndefined();
    text = await registry.metrics();
    expect(sample(text, 'pgmaintd_pitr_window_start_timestamp_seconds')).toBeUndefined();
    expect(sample(text, 'pgmaintd_pitr_chain_gap')).toBe(0);
  });

  it('the window runs from the oldest usable base backup to the last WAL stored after the newest', async () => {
    const store = new CraftedPitrStore();
    // the oldest base backup's WAL is gone: it is not usable, and the window starts at the next one
    const broken = await store.base({ consistentAt: daysAgo(9, NOW), startSeg: 1 });
    const b6 = await store.base({ consistentAt: daysAgo(6, NOW), startSeg: 5 });
    const b1 = await store.base({ consistentAt: daysAgo(1, NOW), startSeg: 10 });
    await store.segments(1, 5, 12, (n) => new Date(daysAgo(1, NOW).getTime() + n * 60_000));
    const partialAt = new Date(daysAgo(1, NOW).getTime() + 20 * 60_000);
    await store.partial(1, 13, 4096, partialAt);
    const registry = new Registry();
    const metrics = new PitrMetrics(registry);
    const { listing, histories } = await read(store);
    const s = refreshPitrMetrics(metrics, listing, histories);
    const text = await registry.metrics();
    expect(sample(text, 'pgmaintd_pitr_window_start_timestamp_seconds')).toBe(
      secs(new Date(b6.manifest.stopDatabaseTime)),
    );
    expect(sample(text, 'pgmaintd_pitr_window_end_timestamp_seconds')).toBe(secs(partialAt));
    expect(sample(text, 'pgmaintd_pitr_chain_gap')).toBe(0);
    expect(sample(text, 'pgmaintd_basebackup_last_success_timestamp_seconds')).toBe(
      secs(new Date(b1.manifest.finishedAt)),
    );
    expect(sample(text, 'pgmaintd_basebackup_last_size_bytes')).toBe(b1.manifest.size);
    expect(sample(text, 'pgmaintd_basebackup_last_duration_seconds')).toBe(60);
    expect(sample(text, 'pgmaintd_basebackup_oldest_timestamp_seconds')).toBe(
      secs(new Date(broken.manifest.finishedAt)),
    );
    expect(s.bases.map((b) => [b.key, b.consistent])).toEqual([
      [b1.key, true],
      [b6.key, true],
      [broken.key, false],
    ]);
    // its start segment is missing while later WAL exists
    expect(s.gaps).toEqual([{ timeline: 1, segment: seg(1, 1) }]);
    expect(s.window?.start).toEqual(new Date(b6.manifest.stopDatabaseTime));
  });

  it('a gap after the newest base backup sets the chain gap, and the window ends before it', async () => {
    const store = new CraftedPitrStore();
    const b = await store.base({ consistentAt: daysAgo(2, NOW), startSeg: 3 });
    const lastBeforeGap = new Date(daysAgo(1, NOW).getTime());
    await store.segments(1, 3, 6, (n) => (n === 6 ? lastBeforeGap : daysAgo(2, NOW)));
    await store.segments(1, 8, 9); // 7 is missing
    const registry = new Registry();
    const metrics = new PitrMetrics(registry);
    const { listing, histories } = await read(store);
    const s = refreshPitrMetrics(metrics, listing, histories);
    const text = await registry.metrics();
    expect(sample(text, 'pgmaintd_pitr_chain_gap')).toBe(1);
    expect(s.gaps).toEqual([{ timeline: 1, segment: seg(1, 7) }]);
    expect(s.bases[0]).toMatchObject({ key: b.key, consistent: true, gap: { segment: seg(1, 7) } });
    expect(sample(text, 'pgmaintd_pitr_window_end_timestamp_seconds')).toBe(secs(lastBeforeGap));
  });

  it('gives a window per timeline', async () => {
    const store = new CraftedPitrStore();
    await store.segments(1, 1, 12, () => daysAgo(3, NOW));
    await store.segments(2, 10, 14, () => daysAgo(1, NOW));
    await store.history(2, [{ parent: 1, atSeg: 10 }]);
    const b1 = await store.base({ consistentAt: daysAgo(4, NOW), startSeg: 2 });
    const { listing, histories } = await read(store);
    const s = pitrSummary(listing, histories);
    expect(s.newestTimeline).toBe(2);
    // timeline 1 went on to segment 12 (an abandoned branch): its own window ends there
    expect(s.windowByTimeline.get(1)).toEqual({
      start: new Date(b1.manifest.stopDatabaseTime),
      end: daysAgo(3, NOW),
    });
    expect(s.windowByTimeline.get(2)).toEqual({
      start: new Date(b1.manifest.stopDatabaseTime),
      end: daysAgo(1, NOW),
    });
    expect(s.window).toEqual(s.windowByTimeline.get(2));
  });
});
