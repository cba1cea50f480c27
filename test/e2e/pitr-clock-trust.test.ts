// PITR retention run by a process whose clock is 40 days fast (libfaketime, for that process only):
// by its clock every base backup is past the window, but the store's clock (a file's modification
// time, set by the kernel with the real time) disagrees, so it deletes nothing. Runs the built
// retention (dist/), as the daemon would.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';
import { CraftedPitrStore, daysAgo } from '../support/crafted-pitr.js';
import { fakeClockEnv } from '../support/fake-clock.js';
import { tempDir } from '../support/temp.js';

const dist = (p: string) => pathToFileURL(join(PACKAGE_ROOT, 'dist', p)).href;

const SCRIPT = `
import { FsStorage } from '${dist('backup/storage/fs.js')}';
import { applyPitrRetention } from '${dist('pitr/retention.js')}';
const [dir, sysid] = process.argv.slice(2);
const lines = [];
const logger = {
  child: () => logger,
  info: (o, msg) => lines.push({ level: 'info', msg }),
  warn: (o, msg) => lines.push({ level: 'warn', msg }),
  error: (o, msg) => lines.push({ level: 'error', msg }),
};
const plan = await applyPitrRetention(
  {
    storage: new FsStorage(dir),
    sysid,
    logger,
    clockToleranceMs: 300000,
    databaseClock: async () => new Date(),
    incompleteGraceMs: 86400000,
  },
  { retentionDays: 7 },
);
process.stdout.write(JSON.stringify({ now: new Date().toISOString(), plan, lines }));
`;

describe('PITR retention on a host whose clock is 40 days fast', () => {
  it('deletes nothing and says which clock disagrees', async () => {
    const store = new CraftedPitrStore();
    await store.base({ consistentAt: daysAgo(20), startSeg: 2 });
    await store.base({ consistentAt: daysAgo(3), startSeg: 10 });
    await store.segments(1, 1, 12);
    const before = store.keys();
    const script = join(tempDir('pgmaintd-pitr-clock-'), 'retention.mjs');
    writeFileSync(script, SCRIPT);
    const r = spawnSync(process.execPath, [script, store.dir, store.sysid], {
      encoding: 'utf8',
      env: { ...process.env, ...fakeClockEnv('+40d') },
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      now: string;
      plan: { removeBases: unknown[]; skipped?: string };
      lines: Array<{ level: string; msg: string }>;
    };
    // the process did see the fast clock, and by it would have deleted the older base backup
    expect(new Date(out.now).getTime() - Date.now()).toBeGreaterThan(39 * 86_400_000);
    expect(out.plan.removeBases).toHaveLength(1);
    expect(out.plan.skipped).toMatch(/the local clock is 345\d{4} s ahead of the store's clock/);
    expect(out.lines.find((l) => l.level === 'error')?.msg).toMatch(/fix the clock \(NTP\)/);
    expect(store.keys()).toEqual(before);
  });
});
