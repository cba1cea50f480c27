// The status summary's backup facts follow the store through the listings the backup side makes
// anyway (a real backup, a real drill, on a real PostgreSQL): no listing of its own.
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { StoreSummary } from '../../src/backup/store-summary.js';
import { runVerification } from '../../src/backup/verify.js';
import { summarize } from '../../src/status/summary.js';
import { backupDeps, type TestDeps } from '../support/backup.js';
import { useTestDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';

const db = useTestDatabase();
let deps: TestDeps;
beforeAll(async () => {
  await seed(db.pool, 20, 2);
  deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
});
afterAll(() => rmSync(deps.dir, { recursive: true, force: true }));

describe('StoreSummary', () => {
  it('is "unknown yet" until a listing, then follows each backup and drill', async () => {
    const stored = new StoreSummary([db.name]).follow(deps.catalog);
    const at = (now = new Date()) =>
      summarize({
        source: 'daemon',
        now,
        database: { up: true, target: 'x' },
        store: { description: deps.storage.description },
        backupSchedule: { cron: '0 3 * * *', timezone: 'UTC' },
        backups: stored.facts(),
        jobs: [],
        collectors: [],
      });
    expect(stored.facts()[0]).toMatchObject({ listedAt: null, newest: null });
    expect(at().problems).toEqual([]); // unknown yet is not "missing"

    const m = await runBackup(deps, db.name); // it refreshes its metrics, which lists the store
    const facts = stored.facts()[0]!;
    expect(facts.listedAt).not.toBeNull();
    expect(facts.newest).toMatchObject({ key: m.key, sizeBytes: m.size, drill: null });
    expect(facts.stored).toBe(1);
    expect(at().backups[0]!.verified).toBe(false);

    await runVerification(deps, db.name);
    const verified = at();
    expect(verified.backups[0]!.verified).toBe(true);
    expect(verified.backups[0]!.lastDrill).toMatchObject({ key: m.key, result: 'ok', mismatches: 0 });
    expect(verified.backups[0]!.overdue).toBe(false);

    // a day and a half later by a daily schedule, the same backup is overdue
    const later = at(new Date(Date.parse(m.finishedAt) + 36 * 3_600_000));
    expect(later.backups[0]!.overdue).toBe(true);
    expect(later.problems.map((p) => p.kind)).toEqual(['backup_overdue']);
  });

  it('keeps the last facts and says why when a listing fails', async () => {
    const stored = new StoreSummary([db.name]).follow(deps.catalog);
    await deps.catalog.list(db.name);
    const before = stored.facts()[0]!;
    // the store's directory turns into a file: a real listing fails
    renameSync(deps.dir, `${deps.dir}.away`);
    writeFileSync(deps.dir, 'not a directory');
    try {
      await expect(deps.catalog.list(db.name)).rejects.toThrow();
    } finally {
      rmSync(deps.dir);
      renameSync(`${deps.dir}.away`, deps.dir);
    }
    const after = stored.facts()[0]!;
    expect(before.newest).not.toBeNull();
    expect(after.newest).toEqual(before.newest);
    expect(after.listError).toContain('ENOTDIR');
  });
});
