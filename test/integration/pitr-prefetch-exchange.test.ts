// The WAL exchange between a root `pitr restore --start` and the server's restore_command (run as the
// `postgres` OS user): root writes only into a directory it alone can write, outside the data
// directory; the server's user copies files out and leaves requests in its inbox, which root only
// lists and unlinks. Whatever the server's user plants there (links named like requests), root's
// writes stay in its own directory.
import { spawn } from 'node:child_process';
import {
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { PREFETCH_POINTER } from '../../src/pitr/prefetch-client.js';
import { Prefetcher } from '../../src/pitr/prefetch.js';
import { serverOwner } from '../../src/pitr/recovery-server.js';
import { putWalFile, type WalStore } from '../../src/pitr/wal-object.js';
import { CLI } from '../support/daemon.js';
import { tempDir } from '../support/temp.js';

const SYSID = '7300000000000000043';
const SEG = 16 * 1024 * 1024;
const owner = serverOwner();
let dataDir: string;
let ws: WalStore;
let prefetcher: Prefetcher;
let victim: string;

const segment = (fill: number) => Buffer.alloc(SEG, fill);

async function until(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** restore_command as PostgreSQL runs it: as the server's user. */
function walFetchAsServer(name: string, dest: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'wal-fetch', name, dest, '--data-dir', dataDir], {
      ...(owner ?? {}),
      env: { PATH: process.env.PATH, BACKUP_DIR: '/nonexistent-store' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

beforeEach(async () => {
  ws = { storage: new FsStorage(tempDir('exchange-store-')), sysid: SYSID };
  for (const n of [3, 4, 5]) await putWalFile(ws, `00000001000000000000000${n}`, segment(n));
  dataDir = tempDir('exchange-data-');
  mkdirSync(join(dataDir, 'pg_wal'));
  const parent = tempDir('exchange-victim-');
  victim = join(parent, 'victim');
  writeFileSync(victim, 'ROOT SECRET\n', { mode: 0o600 });
  prefetcher = new Prefetcher(dataDir, ws, pino({ level: 'silent' }), owner);
  await prefetcher.start();
  // the restore hands the data directory to the server's user after the prefetcher wrote the pointer
  if (owner)
    for (const p of [dataDir, join(dataDir, 'pg_wal'), join(dataDir, PREFETCH_POINTER)])
      chownSync(p, owner.uid, owner.gid);
});

afterEach(async () => {
  await prefetcher.stop();
});

describe('prefetch exchange', () => {
  it('lives in a directory only root writes, and a root never writes where the server user planted links', async () => {
    const dir = prefetcher.dir;
    expect(dir.startsWith(dataDir)).toBe(false);
    for (const d of [dir, join(dir, 'out')]) {
      const st = lstatSync(d);
      expect(st.isDirectory()).toBe(true);
      expect(st.uid).toBe(process.getuid!());
      expect(st.mode & 0o777).toBe(owner ? 0o750 : 0o700);
      if (owner) expect(st.gid).toBe(owner.gid);
    }
    const inbox = join(dir, 'in');
    // what the server's user could plant: links named like requests, like answers, and junk
    symlinkSync(victim, join(inbox, '000000010000000000000009.taken'));
    symlinkSync(victim, join(inbox, '000000010000000000000007.0123456789abcdef.want'));
    symlinkSync('/etc', join(inbox, 'junk'));
    await until('the planted requests handled', () =>
      existsSync(join(dir, 'out', '000000010000000000000007.0123456789abcdef.missing')),
    );

    const dest = join(dataDir, 'pg_wal', 'RECOVERYXLOG');
    const got = await walFetchAsServer('000000010000000000000003', dest);
    expect(got.code, got.out).toBe(0);
    expect(readFileSync(dest).equals(segment(3))).toBe(true);
    // fetched ahead after the first one was taken, then copied without a request
    await until('segment 4 fetched ahead', () => existsSync(join(dir, 'out', '000000010000000000000004')));
    const next = await walFetchAsServer('000000010000000000000004', dest);
    expect(next.code, next.out).toBe(0);
    expect(readFileSync(dest).equals(segment(4))).toBe(true);
    const none = await walFetchAsServer('00000002.history', dest);
    expect(none.code, none.out).toBe(1);
    // the planted `.taken` counts too (a miscount is all it can do)
    await until('both counted', () => prefetcher.fetched === 3);

    for (const f of readdirSync(join(dir, 'out'))) {
      const st = lstatSync(join(dir, 'out', f));
      expect(st.isFile(), f).toBe(true);
      expect(st.uid, f).toBe(process.getuid!());
    }
    expect(readFileSync(victim, 'utf8')).toBe('ROOT SECRET\n');
    expect(lstatSync(victim).uid).toBe(process.getuid!());
    expect(lstatSync(victim).mode & 0o777).toBe(0o600);
    expect(existsSync('/etc/passwd')).toBe(true);

    await prefetcher.stop();
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(join(dataDir, PREFETCH_POINTER))).toBe(false);
    // with no restore serving it, wal-fetch reads the store itself (here: none that loads)
    const after = await walFetchAsServer('000000010000000000000005', dest);
    expect(after.code).not.toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('ROOT SECRET\n');
  }, 120_000);
});
