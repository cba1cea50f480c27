// `wal-fetch %f %p` through the real CLI against a directory store: what PostgreSQL's restore_command
// contract needs. Found: the file, atomically. Not stored: exit 1, quietly (PostgreSQL probes for
// files that do not exist). Corrupt, or missing before later WAL: an exit above 125, which aborts
// recovery, with the key or segment named.
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { beforeEach, describe, expect, it } from 'vitest';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { putPartial, putWalFile, type WalStore } from '../../src/pitr/wal-object.js';
import { walPrefix } from '../../src/pitr/store-keys.js';
import { runCli } from '../support/daemon.js';
import { tempDir } from '../support/temp.js';

const SYSID = '7300000000000000042';
const SEG = 16 * 1024 * 1024;
let store: string;
let dataDir: string;
let ws: WalStore;

function segment(fill: number, written = SEG): Buffer {
  const b = Buffer.alloc(SEG);
  b.fill(fill, 0, written);
  return b;
}

beforeEach(() => {
  store = tempDir('walfetch-store-');
  dataDir = tempDir('walfetch-data-');
  mkdirSync(join(dataDir, 'global'));
  mkdirSync(join(dataDir, 'pg_wal'));
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(BigInt(SYSID), 0);
  writeFileSync(join(dataDir, 'global', 'pg_control'), control);
  ws = { storage: new FsStorage(store), sysid: SYSID };
});

/** Where restore_command asks for the file (PostgreSQL gives a path relative to the data directory). */
const out = () => join(dataDir, 'pg_wal', 'RECOVERYXLOG');

describe('wal-fetch', () => {
  it('writes a stored segment where asked, verified', async () => {
    await putWalFile(ws, '000000010000000000000003', segment(7));
    const r = await runCli(['wal-fetch', '000000010000000000000003', out(), '--data-dir', dataDir], {
      BACKUP_DIR: store,
    });
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(out()).equals(segment(7))).toBe(true);
    expect(readdirSync(join(dataDir, 'pg_wal'))).toEqual(['RECOVERYXLOG']);
  });

  it('a file not stored: exit 1 and nothing said (PostgreSQL probes for future history files)', async () => {
    const r = await runCli(['wal-fetch', '00000002.history', out(), '--data-dir', dataDir], {
      BACKUP_DIR: store,
    });
    expect(r.code).toBe(1);
    expect(r.out.trim()).toBe('');
    expect(existsSync(out())).toBe(false);
  });

  it('a corrupt object: exit 255 (recovery aborts) naming its key', async () => {
    const { key } = await putWalFile(ws, '000000010000000000000003', segment(7));
    const path = join(store, key);
    const content = gunzipSync(readFileSync(path));
    content[5] = 1;
    writeFileSync(path, gzipSync(content));
    const r = await runCli(['wal-fetch', '000000010000000000000003', out(), '--data-dir', dataDir], {
      BACKUP_DIR: store,
    });
    expect(r.code).toBe(EXIT.RECOVERY_ABORT);
    expect(r.out).toContain(key);
    expect(r.out).toMatch(/corrupt/);
    expect(existsSync(out())).toBe(false);
  });

  it('a segment missing while a later one is stored: exit 255 naming the gap', async () => {
    await putWalFile(ws, '000000010000000000000003', segment(7));
    await putWalFile(ws, '000000010000000000000005', segment(9));
    const r = await runCli(['wal-fetch', '000000010000000000000004', out(), '--data-dir', dataDir], {
      BACKUP_DIR: store,
    });
    expect(r.code).toBe(EXIT.RECOVERY_ABORT);
    expect(r.out).toMatch(
      /WAL segment 000000010000000000000004 is missing .* later WAL \(000000010000000000000005\)/,
    );
  });

  it('the largest partial of the newest segment of its timeline stands in for it; an older partial never', async () => {
    await putWalFile(ws, '000000010000000000000003', segment(7));
    await putPartial(ws, '000000010000000000000004', segment(5, 1000), 1000);
    await putPartial(ws, '000000010000000000000004', segment(5, 5000), 5000);
    const r = await runCli(['wal-fetch', '000000010000000000000004', out(), '--data-dir', dataDir], {
      BACKUP_DIR: store,
    });
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(out()).equals(segment(5, 5000))).toBe(true);
    // once a later segment is finished, that partial is a gap's leftover, not the newest WAL
    await putWalFile(ws, '000000010000000000000005', segment(9));
    const again = await runCli(
      ['wal-fetch', '000000010000000000000004', `${out()}2`, '--data-dir', dataDir],
      {
        BACKUP_DIR: store,
      },
    );
    expect(again.code).toBe(EXIT.RECOVERY_ABORT);
    expect(readdirSync(join(store, walPrefix(SYSID))).length).toBe(4);
  });

  it('settings that do not load abort recovery (255), never exit 1 that would end it quietly', async () => {
    await putWalFile(ws, '000000010000000000000003', segment(7));
    const args = ['wal-fetch', '000000010000000000000003', out(), '--data-dir', dataDir];
    const noKey = await runCli(args, {
      BACKUP_DIR: store,
      BACKUP_SIGNING_KEY_FILE: join(dataDir, 'no-such-key'),
    });
    expect(noKey.code, noKey.out).toBe(EXIT.RECOVERY_ABORT);
    expect(noKey.out).toMatch(/invalid configuration/);
    const broken = join(dataDir, 'broken.json');
    writeFileSync(broken, '{ not json');
    const badConfig = await runCli([...args, '--config', broken], { BACKUP_DIR: store });
    expect(badConfig.code, badConfig.out).toBe(EXIT.RECOVERY_ABORT);
    const unknown = await runCli([...args, '--no-such-flag'], { BACKUP_DIR: store });
    expect(unknown.code, unknown.out).toBe(EXIT.RECOVERY_ABORT);
    expect(existsSync(out())).toBe(false);
  });

  it('a segment missing while later WAL is stored only as a partial or on a descendant timeline: exit 255', async () => {
    const fetch4 = () =>
      runCli(['wal-fetch', '000000010000000000000004', out(), '--data-dir', dataDir], { BACKUP_DIR: store });
    await putWalFile(ws, '000000010000000000000003', segment(7));
    // timeline 2 branched from 1 before segment 4: its WAL is no reason to want 1's segment 4
    await putWalFile(ws, '00000002.history', Buffer.from('1\t0/2000000\tno recovery target specified\n'));
    await putWalFile(ws, '000000020000000000000007', segment(8));
    const notNeeded = await fetch4();
    expect(notNeeded.code, notNeeded.out).toBe(1);
    // timeline 3 branched from 1 in segment 6: recovery to it needs segment 4
    await putWalFile(ws, '00000003.history', Buffer.from('1\t0/6000000\tno recovery target specified\n'));
    await putPartial(ws, '000000030000000000000007', segment(6, 100), 100);
    const descendant = await fetch4();
    expect(descendant.code).toBe(EXIT.RECOVERY_ABORT);
    expect(descendant.out).toMatch(/000000010000000000000004 is missing .*000000030000000000000007\.partial/);
  });

  it('a segment of a timeline from before that timeline began is not stored (1): recovery asks the newest timeline first', async () => {
    // timeline 2 began in segment 5 of timeline 1; it has WAL from there on
    await putWalFile(ws, '00000002.history', Buffer.from('1\t0/5000100\tno recovery target specified\n'));
    await putWalFile(ws, '000000020000000000000005', segment(9));
    await putWalFile(ws, '000000020000000000000006', segment(10));
    const fetch = (name: string) =>
      runCli(['wal-fetch', name, out(), '--data-dir', dataDir], { BACKUP_DIR: store });
    const before = await fetch('000000020000000000000003');
    expect(before.code, before.out).toBe(1);
    // from its first segment on, a missing one of it is a gap
    await putWalFile(ws, '000000020000000000000008', segment(11));
    const gap = await fetch('000000020000000000000007');
    expect(gap.code).toBe(EXIT.RECOVERY_ABORT);
  });

  it('a segment missing while a later partial of its timeline is stored: exit 255', async () => {
    await putWalFile(ws, '000000010000000000000003', segment(7));
    await putPartial(ws, '000000010000000000000005', segment(5, 4000), 4000);
    const r = await runCli(['wal-fetch', '000000010000000000000004', out(), '--data-dir', dataDir], {
      BACKUP_DIR: store,
    });
    expect(r.code).toBe(EXIT.RECOVERY_ABORT);
    expect(r.out).toMatch(/000000010000000000000004 is missing .*000000010000000000000005\.partial/);
    expect(existsSync(out())).toBe(false);
  });
});
