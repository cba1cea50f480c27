// The retention policy on synthetic listings: the cutoff, the minimum count, GFS, incomplete leftovers.
import { describe, expect, it } from 'vitest';
import type { CatalogListing, GoodBackup } from '../../src/backup/catalog.js';
import { dataKey } from '../../src/backup/naming.js';
import { planRetention, type RetentionPolicy } from '../../src/backup/retention.js';

const DAY = 86_400_000;
const NOW = new Date('2026-11-24T03:00:00Z');
const policy: RetentionPolicy = {
  days: 30,
  minCount: 3,
  keepDaily: 0,
  keepWeekly: 0,
  keepMonthly: 0,
  incompleteGraceMs: DAY,
};

function backupsAt(...ages: number[]): GoodBackup[] {
  return ages
    .map((days) => {
      const at = new Date(NOW.getTime() - days * DAY);
      const key = dataKey('app', at, 'plain', 'a1b2c3d4');
      return { key, database: 'app', at, size: 1, verify: undefined, manifest: {} as GoodBackup['manifest'] };
    })
    .sort((a, b) => b.at.getTime() - a.at.getTime());
}

const listing = (good: GoodBackup[], incomplete: CatalogListing['incomplete'] = []): CatalogListing => ({
  good,
  incomplete,
});
const removed = (l: CatalogListing, p: RetentionPolicy = policy) =>
  planRetention(l, p, NOW)
    .remove.map((r) => r.key)
    .sort();

describe('retention plan', () => {
  it('deletes good backups older than the cutoff, and their manifest and verify record', () => {
    const good = backupsAt(0, 1, 2, 29, 31, 45);
    const plan = planRetention(listing(good), policy, NOW);
    expect(plan.remove.map((r) => r.key)).toEqual([good[4]!.key, good[5]!.key]);
    expect(plan.objectKeys).toEqual([
      good[4]!.key,
      `${good[4]!.key}.manifest.json`,
      `${good[4]!.key}.verify.json`,
      good[5]!.key,
      `${good[5]!.key}.manifest.json`,
      `${good[5]!.key}.verify.json`,
    ]);
    expect(plan.keep).toHaveLength(4);
  });

  it('never leaves fewer than the minimum count, even when every backup is old (backups stopped for two months)', () => {
    const good = backupsAt(60, 61, 62, 63, 64);
    const plan = planRetention(listing(good), policy, NOW);
    expect(plan.keep.map((k) => k.key)).toEqual(good.slice(0, 3).map((g) => g.key));
    expect(plan.keep.every((k) => k.why.includes('min-count'))).toBe(true);
    expect(plan.remove.map((r) => r.key)).toEqual(good.slice(3).map((g) => g.key));
    expect(removed(listing(backupsAt(90, 91)))).toEqual([]); // fewer than the minimum: nothing goes
  });

  it('keeps GFS picks: the newest backup of each of the last N days, weeks and months', () => {
    // two backups a day for 100 days
    const good = backupsAt(...Array.from({ length: 200 }, (_, i) => i / 2));
    const p = { ...policy, days: 7, minCount: 1, keepDaily: 10, keepWeekly: 6, keepMonthly: 4 };
    const plan = planRetention(listing(good), p, NOW);
    const kept = plan.keep;
    const has = (label: string) => kept.filter((k) => k.why.some((w) => w.startsWith(label)));
    expect(has('daily')).toHaveLength(10);
    expect(has('weekly')).toHaveLength(6);
    expect(has('monthly')).toHaveLength(4);
    // each daily pick is the newest of its day
    for (const k of has('daily')) {
      const day = k.why.find((w) => w.startsWith('daily'))!.split(' ')[1]!;
      const newestOfDay = good.find((g) => g.at.toISOString().startsWith(day))!;
      expect(k.key).toBe(newestOfDay.key);
    }
    // the oldest monthly pick is about three months back
    const months = has('monthly').map((k) => k.why.find((w) => w.startsWith('monthly'))!.split(' ')[1]);
    expect(months).toEqual(['2026-11', '2026-10', '2026-09', '2026-08']);
    // everything else past 7 days goes
    for (const r of plan.remove)
      expect(good.find((g) => g.key === r.key)!.at.getTime()).toBeLessThan(NOW.getTime() - 7 * DAY);
  });

  it('removes incomplete leftovers only after the grace period, and never one it cannot judge', () => {
    const l = listing(backupsAt(1), [
      {
        key: 'app/app_20261120_020000.sql.gz',
        why: 'no manifest',
        lastModified: new Date(NOW.getTime() - 2 * DAY),
        deletable: true,
      },
      {
        key: 'app/app_20261124_020000.sql.gz',
        why: 'no manifest',
        lastModified: new Date(NOW.getTime() - 3600_000),
        deletable: true,
      },
      {
        // a manifest written by another version, or that disagrees with its object: kept for a person
        key: 'app/app_20261001_020000.sql.gz',
        why: 'manifest app/app_20261001_020000.sql.gz.manifest.json is malformed',
        lastModified: new Date(NOW.getTime() - 50 * DAY),
        deletable: false,
      },
    ]);
    expect(removed(l)).toEqual(['app/app_20261120_020000.sql.gz']);
  });
});
