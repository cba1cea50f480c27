// PITR retention on a hand-made store in a directory: which base backups and WAL the window keeps,
// gaps, timelines, forged manifests, wrong clocks and failing listings (nothing deleted), leftovers,
// and a second run that finds nothing more to do.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Signer } from '../../src/backup/signing.js';
import type { Storage } from '../../src/backup/storage/storage.js';
import { PitrMetrics } from '../../src/pitr/metrics.js';
import {
  listPitr,
  loadHistories,
  newestTimeline,
  timelinePath,
  walChain,
} from '../../src/pitr/pitr-catalog.js';
import { applyPitrRetention, type PitrRetentionDeps } from '../../src/pitr/retention.js';
import { BASE_MANIFEST_SUFFIX, walKey } from '../../src/pitr/store-keys.js';
import { historyName } from '../../src/pitr/wal-name.js';
import { CraftedPitrStore, DAY, daysAgo, seg } from '../support/crafted-pitr.js';
import { immutableUnsupported, makeImmutable } from '../support/immutable.js';

function collectingLogger() {
  const lines: Array<{ level: number; msg: string }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as never);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

async function metricValue(m: PitrMetrics, name: string, labels: Record<string, string> = {}) {
  const all = [
    m.retentionDeleted,
    m.retentionBlocked,
    m.windowStart,
    m.windowEnd,
    m.chainGap,
    m.retentionDays,
    m.retentionLocked,
  ];
  for (const metric of all) {
    const got = await metric.get();
    if (got.name !== name) continue;
    const v = got.values.find((x) =>
      Object.entries(labels).every(([k, val]) => (x.labels as Record<string, unknown>)[k] === val),
    );
    return v?.value;
  }
  return undefined;
}

function depsFor(store: CraftedPitrStore, over: Partial<PitrRetentionDeps> = {}) {
  const { logger, lines } = collectingLogger();
  const metrics = new PitrMetrics(new Registry());
  const deps: PitrRetentionDeps = {
    storage: store.storage,
    sysid: store.sysid,
    signer: store.signer,
    logger,
    metrics,
    clockToleranceMs: 300_000,
    databaseClock: () => Promise.resolve(new Date()),
    incompleteGraceMs: DAY,
    ...over,
  };
  return { deps, metrics, lines };
}

const walKeys = (keys: string[]) => keys.filter((k) => k.includes('/wal/'));
const segOf = (keys: string[], name: string) => keys.some((k) => k.includes(`/wal/${name}-`));

/** Every kept base backup still reaches its consistency point, and its chain is as long as before. */
async function keptChainsIntact(store: CraftedPitrStore, before: Map<string, number>) {
  const listing = await listPitr(store.storage, store.sysid, store.signer ? { signer: store.signer } : {});
  const histories = await loadHistories(store.storage, listing, store.signer ? { signer: store.signer } : {});
  const path = timelinePath(newestTimeline(listing), histories);
  for (const b of listing.bases) {
    const c = walChain(listing, b.manifest, path);
    if (before.has(b.key)) expect(c.segments, b.key).toBe(before.get(b.key));
  }
}

async function chainLengths(store: CraftedPitrStore) {
  const listing = await listPitr(store.storage, store.sysid, store.signer ? { signer: store.signer } : {});
  const histories = await loadHistories(store.storage, listing, store.signer ? { signer: store.signer } : {});
  const path = timelinePath(newestTimeline(listing), histories);
  return new Map(listing.bases.map((b) => [b.key, walChain(listing, b.manifest, path).segments]));
}

describe('PITR retention', () => {
  it('keeps the base backup that covers the window start, every later one, and the WAL from its start', async () => {
    const store = new CraftedPitrStore();
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    const b10 = await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    const b8 = await store.base({ consistentAt: daysAgo(8), startSeg: 15 });
    const b5 = await store.base({ consistentAt: daysAgo(5), startSeg: 20 });
    const b1 = await store.base({ consistentAt: daysAgo(1), startSeg: 30 });
    await store.segments(1, 1, 35);
    const oldPartial = await store.partial(1, 5, 4096, daysAgo(19));
    const openPartial = await store.partial(1, 36, 8192);
    const { deps, metrics, lines } = depsFor(store);
    const before = await chainLengths(store);

    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.skipped).toBeUndefined();
    expect(plan.walBlocked).toBeUndefined();
    // b8 is older than the window too, but b10 is not needed once b8 covers its start
    expect(plan.keep.map((k) => k.key)).toEqual([b1.key, b5.key, b8.key]);
    expect(plan.removeBases.map((b) => b.key).sort()).toEqual([b10.key, b20.key].sort());
    const keys = store.keys();
    for (const b of [b20, b10]) {
      expect(keys).not.toContain(b.key);
      expect(keys).not.toContain(b.key + BASE_MANIFEST_SUFFIX);
    }
    for (const b of [b8, b5, b1]) expect(keys).toContain(b.key + BASE_MANIFEST_SUFFIX);
    for (let n = 1; n <= 35; n++) expect(segOf(keys, seg(1, n)), `segment ${n}`).toBe(n >= 15);
    expect(keys).not.toContain(oldPartial);
    expect(keys).toContain(openPartial);
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_deleted_total', { kind: 'basebackup' })).toBe(
      2,
    );
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_deleted_total', { kind: 'wal' })).toBe(15);
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_blocked')).toBe(0);
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_days')).toBe(7);
    expect(await metricValue(metrics, 'pgmaintd_pitr_window_start_timestamp_seconds')).toBe(
      daysAgoSeconds(b8.manifest.stopDatabaseTime),
    );
    expect(lines.some((l) => l.msg === 'PITR retention applied')).toBe(true);
    await keptChainsIntact(store, before);

    // idempotent: a second run finds nothing to delete and changes nothing
    const again = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(again.removeBases).toEqual([]);
    expect(again.removeWal).toEqual([]);
    expect(again.keep.map((k) => k.key)).toEqual([b1.key, b5.key, b8.key]);
    expect(store.keys()).toEqual(keys);
  });

  it('keeps everything when no consistent base backup is older than the window (a new installation)', async () => {
    const store = new CraftedPitrStore();
    const b3 = await store.base({ consistentAt: daysAgo(3), startSeg: 4 });
    const b1 = await store.base({ consistentAt: daysAgo(1), startSeg: 9 });
    await store.segments(1, 1, 12);
    const { deps } = depsFor(store);
    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.keep.map((k) => k.key)).toEqual([b1.key, b3.key]);
    expect(plan.removeBases).toEqual([]);
    // WAL before the oldest base backup's start restores nothing
    expect(walKeys(store.keys())).toHaveLength(9);
    for (let n = 4; n <= 12; n++) expect(segOf(store.keys(), seg(1, n))).toBe(true);
  });

  it('deletes no WAL while the chain from the oldest kept base backup has a gap, and says to take a base backup', async () => {
    const store = new CraftedPitrStore();
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.base({ consistentAt: daysAgo(2), startSeg: 20 });
    await store.segments(1, 1, 14);
    await store.segments(1, 16, 25); // 15 is missing
    const { deps, metrics, lines } = depsFor(store);
    const walBefore = walKeys(store.keys());
    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.walBlocked).toContain(`gap at ${seg(1, 15)}`);
    expect(plan.removeWal).toEqual([]);
    expect(walKeys(store.keys())).toEqual(walBefore);
    // the older base backup still goes: it cannot pass the gap either
    expect(store.keys()).not.toContain(b20.key);
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_blocked')).toBe(1);
    expect(await metricValue(metrics, 'pgmaintd_pitr_chain_gap')).toBe(0); // the newest one's chain is whole
    const err = lines.find((l) => l.level === 50);
    expect(err?.msg).toMatch(/deletes no WAL.*gap.*Take a new base backup/);
  });

  it('follows timelines: history files stay, WAL before the floor goes on every timeline', async () => {
    const store = new CraftedPitrStore();
    // timeline 2 branched off timeline 1 in segment 15; timeline 1 went on to 20 (an abandoned branch)
    await store.segments(1, 1, 20);
    await store.segments(2, 15, 30);
    const hist = await store.history(2, [{ parent: 1, atSeg: 15 }]);
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 3 });
    const b10 = await store.base({ consistentAt: daysAgo(10), startSeg: 8 });
    const b2 = await store.base({ consistentAt: daysAgo(2), timeline: 2, startSeg: 25 });
    const { deps } = depsFor(store);
    const before = await chainLengths(store);

    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.keep.map((k) => k.key)).toEqual([b2.key, b10.key]);
    expect(plan.removeBases.map((b) => b.key)).toEqual([b20.key]);
    let keys = store.keys();
    expect(keys).toContain(hist);
    for (let n = 1; n <= 20; n++) expect(segOf(keys, seg(1, n)), `1/${n}`).toBe(n >= 8);
    for (let n = 15; n <= 30; n++) expect(segOf(keys, seg(2, n)), `2/${n}`).toBe(true);
    await keptChainsIntact(store, before);

    // a shorter window: the base backup on timeline 2 covers it; everything before its start goes,
    // on both timelines, and the history file stays
    const plan1 = await applyPitrRetention(deps, { retentionDays: 1 });
    expect(plan1.keep.map((k) => k.key)).toEqual([b2.key]);
    keys = store.keys();
    expect(keys).toContain(hist);
    expect(walKeys(keys).filter((k) => k.includes('/wal/00000001'))).toEqual([]);
    for (let n = 15; n <= 30; n++) expect(segOf(keys, seg(2, n)), `2/${n}`).toBe(n >= 25);
  });

  it('never deletes WAL a kept base backup needs, even one that started before the covering one', async () => {
    const store = new CraftedPitrStore();
    const b10 = await store.base({ consistentAt: daysAgo(10), startSeg: 10, stopSeg: 11 });
    // a long base backup: it began in segment 6 and became consistent later than b10
    const long = await store.base({ consistentAt: daysAgo(6), startSeg: 6, stopSeg: 18 });
    await store.segments(1, 1, 20);
    const { deps } = depsFor(store);
    const before = await chainLengths(store);
    const plan = await applyPitrRetention(deps, { retentionDays: 8 });
    expect(plan.keep.map((k) => k.key)).toEqual([long.key, b10.key]);
    for (let n = 1; n <= 20; n++) expect(segOf(store.keys(), seg(1, n)), `${n}`).toBe(n >= 6);
    await keptChainsIntact(store, before);
  });

  it('a base backup whose WAL does not reach its consistency point never covers the window', async () => {
    const store = new CraftedPitrStore();
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    // b10's stop segment was never stored: it cannot be restored
    const b10 = await store.base({ consistentAt: daysAgo(10), startSeg: 10, stopSeg: 12 });
    await store.segments(1, 1, 11);
    const { deps } = depsFor(store);
    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.keep.map((k) => k.key)).toEqual([b10.key, b20.key]);
    expect(plan.removeBases).toEqual([]);
    expect(walKeys(store.keys())).toHaveLength(10); // segment 1 is before b20's start
  });

  it('deletes no WAL when base backups disagree on the segment size (positions cannot be told)', async () => {
    const store = new CraftedPitrStore();
    await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.base({ consistentAt: daysAgo(2), startSeg: 6, segmentBytes: 2 * 1024 * 1024 });
    await store.segments(1, 1, 14);
    const walBefore = walKeys(store.keys());
    const plan = await applyPitrRetention(depsFor(store).deps, { retentionDays: 7 });
    expect(plan.walBlocked).toMatch(/1048576-byte WAL segments, the newest 2097152/);
    expect(walKeys(store.keys())).toEqual(walBefore);
  });

  it('with a signer, a forged (unsigned) manifest never covers the window and is left for a person', async () => {
    const signer = new Signer([Buffer.alloc(32, 7)]);
    const store = new CraftedPitrStore(signer);
    const ancientForgery = await store.base({ consistentAt: daysAgo(40), startSeg: 1, unsigned: true });
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 3 });
    const forged = await store.base({ consistentAt: daysAgo(10), startSeg: 10, unsigned: true });
    const otherKey = await store.base({
      consistentAt: daysAgo(9),
      startSeg: 11,
      signer: new Signer([Buffer.alloc(32, 9)]),
    });
    const b2 = await store.base({ consistentAt: daysAgo(2), startSeg: 20 });
    await store.segments(1, 1, 25);
    const { deps, lines } = depsFor(store);
    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.keep.map((k) => k.key)).toEqual([b2.key, b20.key]);
    expect(plan.untrusted.map((u) => u.key).sort()).toEqual(
      [ancientForgery.key, forged.key, otherKey.key].sort(),
    );
    const keys = store.keys();
    for (const b of [ancientForgery, forged, otherKey]) {
      expect(keys).toContain(b.key);
      expect(keys).toContain(b.key + BASE_MANIFEST_SUFFIX);
    }
    for (let n = 1; n <= 25; n++) expect(segOf(keys, seg(1, n)), `${n}`).toBe(n >= 3);
    expect(lines.filter((l) => l.level === 40 && /untrusted base backup/.test(l.msg))).toHaveLength(3);
  });

  it('deletes nothing while the local clock disagrees with the database server’s', async () => {
    const store = new CraftedPitrStore();
    await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.segments(1, 1, 12);
    const { deps, metrics, lines } = depsFor(store, {
      databaseClock: () => Promise.resolve(new Date(Date.now() + 3600_000)),
    });
    const before = store.keys();
    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.removeBases).toHaveLength(1);
    expect(plan.skipped).toMatch(/3600 s behind the database server's clock: nothing was deleted/);
    expect(store.keys()).toEqual(before);
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_blocked')).toBe(1);
    expect(lines.find((l) => l.level === 50)?.msg).toMatch(/fix the clock/);
    // and when the database's clock cannot be read, a local directory's clock proves nothing
    const unchecked = depsFor(store, { databaseClock: () => Promise.resolve(undefined) });
    expect((await applyPitrRetention(unchecked.deps, { retentionDays: 7 })).skipped).toMatch(
      /cannot be checked/,
    );
    expect(store.keys()).toEqual(before);
  });

  it('deletes nothing when the listing fails', async () => {
    const store = new CraftedPitrStore();
    await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.segments(1, 1, 12);
    const deleted: string[] = [];
    const failing = new Proxy(store.storage, {
      get(target, prop) {
        if (prop === 'list') return () => Promise.reject(new Error('connection reset'));
        if (prop === 'delete')
          return (keys: string[]) => {
            deleted.push(...keys);
            return Promise.resolve();
          };
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Storage;
    const before = store.keys();
    const { deps } = depsFor(store, { storage: failing });
    await expect(applyPitrRetention(deps, { retentionDays: 7 })).rejects.toThrow(/connection reset/);
    expect(deleted).toEqual([]);
    expect(store.keys()).toEqual(before);
  });

  it('deletes nothing when a history file does not verify (the timelines cannot be told)', async () => {
    const store = new CraftedPitrStore();
    await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.segments(1, 1, 12);
    // a history file whose content does not match the tag in its name
    const key = walKey(store.sysid, historyName(2), 'a'.repeat(64));
    mkdirSync(dirname(join(store.dir, key)), { recursive: true });
    writeFileSync(join(store.dir, key), gzipSync('1\t0/5000000\tforged\n'));
    const before = store.keys();
    await expect(applyPitrRetention(depsFor(store).deps, { retentionDays: 7 })).rejects.toThrow(/is corrupt/);
    expect(store.keys()).toEqual(before);
  });

  it('deletes a base backup manifest first, then its data; removes old leftovers and superseded partials', async () => {
    const store = new CraftedPitrStore();
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    const oldUnfinished = await store.base({ consistentAt: daysAgo(3), startSeg: 12, noManifest: true });
    const newUnfinished = await store.base({ consistentAt: daysAgo(0), startSeg: 13, noManifest: true });
    store.touch(oldUnfinished.key, daysAgo(3));
    await store.segments(1, 1, 14);
    const superseded = await store.partial(1, 13, 4096, new Date(Date.now() - 2 * 3600_000));
    const fresh = await store.partial(1, 14, 4096);
    const calls: string[][] = [];
    const recording = new Proxy(store.storage, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop === 'delete')
          return (keys: string[]) => {
            calls.push([...keys]);
            return target.delete(keys);
          };
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Storage;
    const { deps, metrics } = depsFor(store, { storage: recording });
    const plan = await applyPitrRetention(deps, { retentionDays: 7 });
    expect(plan.removeLeftovers.map((l) => l.key)).toEqual([oldUnfinished.key]);
    const manifestCall = calls.findIndex((c) => c.includes(b20.key + BASE_MANIFEST_SUFFIX));
    const dataCall = calls.findIndex((c) => c.includes(b20.key));
    expect(manifestCall).toBeGreaterThanOrEqual(0);
    expect(dataCall).toBeGreaterThan(manifestCall);
    const keys = store.keys();
    expect(keys).not.toContain(oldUnfinished.key);
    expect(keys).toContain(newUnfinished.key);
    expect(keys).not.toContain(superseded);
    expect(keys).toContain(fresh);
    expect(await metricValue(metrics, 'pgmaintd_pitr_retention_deleted_total', { kind: 'leftover' })).toBe(1);
  });

  it('retains what the directory store keeps locked (immutable files), deletes the rest, and the locked ones once unlocked', async (ctx) => {
    const store = new CraftedPitrStore();
    const unsupported = immutableUnsupported(store.dir);
    if (unsupported) {
      console.log(`skipped: ${unsupported}`);
      ctx.skip();
    }
    const b20 = await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    const b15 = await store.base({ consistentAt: daysAgo(15), startSeg: 5 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.segments(1, 1, 12);
    const wal = (n: number) => store.keys().find((k) => k.includes(`/wal/${seg(1, n)}-`))!;
    // b20's manifest and one WAL segment are locked (chattr +i: unlink fails with EPERM)
    const lockedKeys = [b20.key + BASE_MANIFEST_SUFFIX, wal(3)];
    const unlock = makeImmutable(...lockedKeys.map((k) => join(store.dir, k)));
    try {
      const { deps, metrics, lines } = depsFor(store);
      const plan = await applyPitrRetention(deps, { retentionDays: 7 });
      expect(plan.locked?.map((l) => l.key).sort()).toEqual([...lockedKeys].sort());
      let keys = store.keys();
      // a base backup whose manifest stays keeps its data: it is still whole
      expect(keys).toContain(b20.key);
      expect(keys).toContain(b20.key + BASE_MANIFEST_SUFFIX);
      expect(keys).not.toContain(b15.key);
      expect(keys).not.toContain(b15.key + BASE_MANIFEST_SUFFIX);
      expect(keys).toContain(wal(3));
      for (const n of [1, 2, 4, 9]) expect(segOf(keys, seg(1, n)), `segment ${n}`).toBe(false);
      expect(await metricValue(metrics, 'pgmaintd_pitr_retention_locked_objects')).toBe(2);
      expect(
        await metricValue(metrics, 'pgmaintd_pitr_retention_deleted_total', { kind: 'basebackup' }),
      ).toBe(1);
      // retained is said at info, never as an error
      expect(lines.filter((l) => l.level >= 50)).toEqual([]);
      expect(
        lines.find(
          (l) => l.level === 30 && /PITR retention retained 2 object\(s\) the store keeps locked/.test(l.msg),
        ),
      ).toBeDefined();

      // the lock ends: the next run deletes them
      unlock();
      const after = await applyPitrRetention(deps, { retentionDays: 7 });
      expect(after.locked).toEqual([]);
      keys = store.keys();
      expect(keys).not.toContain(b20.key);
      expect(keys).not.toContain(b20.key + BASE_MANIFEST_SUFFIX);
      expect(segOf(keys, seg(1, 3))).toBe(false);
      expect(await metricValue(metrics, 'pgmaintd_pitr_retention_locked_objects')).toBe(0);
    } finally {
      unlock();
    }
  });

  it('a dry run deletes nothing', async () => {
    const store = new CraftedPitrStore();
    await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(10), startSeg: 10 });
    await store.segments(1, 1, 12);
    const before = store.keys();
    const plan = await applyPitrRetention(depsFor(store).deps, { retentionDays: 7, dryRun: true });
    expect(plan.removeBases).toHaveLength(1);
    expect(plan.removeWal).toHaveLength(9);
    expect(store.keys()).toEqual(before);
  });
});

function daysAgoSeconds(iso: string): number {
  return new Date(iso).getTime() / 1000;
}
