// Drill records are named by the second; two drills within one second must still let the later one count,
// whatever order their random run ids put them in.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Catalog } from '../../src/backup/catalog.js';
import { stamp, verifyKey, verifyKeysOf, verifyStampOf } from '../../src/backup/naming.js';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { writeBackup } from '../support/crafted-backup.js';
import { tempDir } from '../support/temp.js';

function record(key: string, verifiedAt: Date, ok: boolean): string {
  return JSON.stringify({
    key,
    ok,
    result: ok ? 'ok' : 'failed',
    verifiedAt: verifiedAt.toISOString(),
    durationSeconds: 0.1,
    tablesCompared: 0,
    mismatches: ok ? [] : [{ table: 'public.t', expected: 1, actual: 0 }],
  });
}

describe('drill records of the same second', () => {
  it('the name gives the second; the newest by content wins among records that share it', async () => {
    const dir = tempDir('pgmaintd-drill-order-');
    const at = new Date(Date.now() - 60_000);
    const b = writeBackup(dir, 'app', 'SELECT 1;\n', { at, run: 'r1' });
    const drill = new Date(at.getTime() + 10_000);
    drill.setUTCMilliseconds(100);
    const later = new Date(drill.getTime() + 800); // the same second
    // the later drill gets the run id that sorts last by name, so name order alone would pick the earlier
    const earlierKey = verifyKey(b.key, drill, 'zz');
    const laterKey = verifyKey(b.key, later, 'aa');
    expect(verifyStampOf(b.key, earlierKey)).toBe(stamp(drill));
    expect(verifyStampOf(b.key, laterKey)).toBe(stamp(drill));
    expect(verifyStampOf(b.key, `${b.key}.verify.json`)).toBe('');
    expect(verifyStampOf(b.key, `${b.key}.manifest.json`)).toBeUndefined();
    expect(verifyKeysOf(b.key, [laterKey, earlierKey])).toEqual([earlierKey, laterKey]);
    writeFileSync(join(dir, earlierKey), record(b.key, drill, true));
    writeFileSync(join(dir, laterKey), record(b.key, later, false));
    const newest = await new Catalog(new FsStorage(dir)).latest('app');
    expect(newest?.verify).toMatchObject({ ok: false, verifiedAt: later.toISOString() });
  });

  it('a record of a later second counts over an earlier one, whatever their run ids', async () => {
    const dir = tempDir('pgmaintd-drill-order-');
    const at = new Date(Date.now() - 60_000);
    const b = writeBackup(dir, 'app', 'SELECT 1;\n', { at, run: 'r1' });
    const first = new Date(at.getTime() + 5_000);
    const second = new Date(at.getTime() + 20_000);
    writeFileSync(join(dir, verifyKey(b.key, first, 'aa')), record(b.key, first, false));
    writeFileSync(join(dir, verifyKey(b.key, second, 'bb')), record(b.key, second, true));
    const newest = await new Catalog(new FsStorage(dir)).latest('app');
    expect(newest?.verify).toMatchObject({ ok: true, verifiedAt: second.toISOString() });
  });
});
