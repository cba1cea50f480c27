// Encrypted WAL objects (age after gzip) against a directory store, through the real `wal-fetch`
// CLI and the real `age` CLI: idempotent re-push although age is randomized, a conflicting segment
// refused without the identity, a damaged object told apart without it, and a missing or wrong
// identity aborting recovery (exit 255), never ending it (exit 1).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { encryptBuffer } from '../../src/backup/encryption.js';
import { Signer } from '../../src/backup/signing.js';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { listPitr, loadHistories } from '../../src/pitr/pitr-catalog.js';
import { walKey, walPrefix } from '../../src/pitr/store-keys.js';
import { WalConflictError, putPartial, putWalFile, type WalStore } from '../../src/pitr/wal-object.js';
import { runCli } from '../support/daemon.js';
import { tempDir } from '../support/temp.js';

const SYSID = '7300000000000000043';
const SEG = 16 * 1024 * 1024;
const NAME = '000000010000000000000003';
let keys: string;
let idA: string;
let idB: string;
let pubA: string;
let store: string;
let dataDir: string;
let ws: WalStore;

function segment(fill: number, written = SEG): Buffer {
  const b = Buffer.alloc(SEG);
  b.fill(fill, 0, written);
  return b;
}

const stored = () => readdirSync(join(store, walPrefix(SYSID)));
const out = () => join(dataDir, 'pg_wal', 'RECOVERYXLOG');
const fetch = (name: string, extra: Record<string, string> = {}) =>
  runCli(['wal-fetch', name, out(), '--data-dir', dataDir], { BACKUP_DIR: store, ...extra });

beforeAll(() => {
  keys = tempDir('walenc-keys-');
  idA = join(keys, 'a.txt');
  idB = join(keys, 'b.txt');
  execFileSync('age-keygen', ['-o', idA], { stdio: 'ignore' });
  execFileSync('age-keygen', ['-o', idB], { stdio: 'ignore' });
  pubA = execFileSync('age-keygen', ['-y', idA], { encoding: 'utf8' }).trim();
});

beforeEach(() => {
  store = tempDir('walenc-store-');
  dataDir = tempDir('walenc-data-');
  mkdirSync(join(dataDir, 'global'));
  mkdirSync(join(dataDir, 'pg_wal'));
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(BigInt(SYSID), 0);
  writeFileSync(join(dataDir, 'global', 'pg_control'), control);
  // the writer has the recipients only, never an identity
  ws = { storage: new FsStorage(store), sysid: SYSID, segmentBytes: SEG, recipients: () => [pubA] };
});

describe('encrypted WAL objects', () => {
  it('are age after gzip: `age -d -i key | gunzip` gives the segment, whose SHA-256 the name holds', async () => {
    const r = await putWalFile(ws, NAME, segment(7));
    expect(r.stored).toBe('new');
    const [file] = stored();
    expect(file).toMatch(new RegExp(`^${NAME}-[0-9a-f]{64}-[0-9a-f]{64}\\.gz\\.age$`));
    const path = join(store, walPrefix(SYSID), file!);
    expect(readFileSync(path).subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    const plain = execFileSync('sh', ['-c', `age -d -i ${idA} ${path} | gunzip`], { maxBuffer: 64 << 20 });
    expect(plain.equals(segment(7))).toBe(true);
    const [, tag, storedTag] = /-([0-9a-f]{64})-([0-9a-f]{64})\.gz\.age$/.exec(file!)!;
    expect(tag).toBe(createHash('sha256').update(plain).digest('hex'));
    expect(storedTag).toBe(createHash('sha256').update(readFileSync(path)).digest('hex'));
  });

  it('a re-push of the same segment is "already stored", a different one is refused, without the identity', async () => {
    await putWalFile(ws, NAME, segment(7));
    expect((await putWalFile(ws, NAME, segment(7))).stored).toBe('already');
    // stored plain before encryption was turned on: the same plaintext, so the same segment
    const plainWs = { ...ws, recipients: undefined };
    expect((await putWalFile(plainWs, NAME, segment(7))).stored).toBe('already');
    await expect(putWalFile(ws, NAME, segment(8))).rejects.toBeInstanceOf(WalConflictError);
    expect(stored()).toHaveLength(1);
    // partials: the same content twice is one object
    const seg4 = '000000010000000000000004';
    expect((await putPartial(ws, seg4, segment(5, 4096), 4096)).stored).toBe('new');
    expect((await putPartial(ws, seg4, segment(5, 4096), 4096)).stored).toBe('already');
    expect(stored()).toHaveLength(2);
  });

  it('a damaged encrypted copy is told apart without the identity: it does not block archiving', async () => {
    await putWalFile(ws, NAME, segment(8));
    const [file] = stored();
    const path = join(store, walPrefix(SYSID), file!);
    const b = readFileSync(path);
    b[b.length - 5]! ^= 0xff;
    writeFileSync(path, b);
    expect((await putWalFile(ws, NAME, segment(7))).stored).toBe('new');
    // wal-fetch serves the copy that verifies
    const r = await fetch(NAME, { BACKUP_ENCRYPTION_IDENTITY_FILE: idA });
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(out()).equals(segment(7))).toBe(true);
  });

  it('signed: the stored-bytes tag is an HMAC, so a copy planted without the key is no conflict', async () => {
    const signed = { ...ws, signer: new Signer([randomBytes(32)]) };
    // planted: a different segment encrypted to the (public) recipient, named with plain SHA-256 tags
    const other = await encryptBuffer(gzipSync(segment(8)), [pubA]);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    mkdirSync(join(store, walPrefix(SYSID)), { recursive: true });
    writeFileSync(join(store, walKey(SYSID, NAME, sha(segment(8)), sha(other))), other);
    expect((await putWalFile(signed, NAME, segment(7))).stored).toBe('new');
    // ours, signed, is a conflict for a different segment
    await expect(putWalFile(signed, NAME, segment(9))).rejects.toBeInstanceOf(WalConflictError);
  });

  it('wal-fetch decrypts with the identity; without it or with a wrong one, exit 255 naming the object', async () => {
    await putWalFile(ws, NAME, segment(7));
    const ok = await fetch(NAME, { BACKUP_ENCRYPTION_IDENTITY_FILE: idA });
    expect(ok.code, ok.out).toBe(0);
    expect(readFileSync(out()).equals(segment(7))).toBe(true);
    for (const extra of [{ BACKUP_ENCRYPTION_IDENTITY_FILE: idB }, {}] as Array<Record<string, string>>) {
      const dest = join(dataDir, 'pg_wal', 'RECOVERYXLOG');
      rmSync(dest, { force: true });
      const r = await fetch(NAME, extra);
      expect(r.code, r.out).toBe(EXIT.RECOVERY_ABORT);
      expect(r.out).toContain(NAME);
      expect(r.out).toMatch(
        extra.BACKUP_ENCRYPTION_IDENTITY_FILE
          ? /no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/
          : /BACKUP_ENCRYPTION_IDENTITY_FILE is not set/,
      );
      expect(existsSync(dest)).toBe(false);
    }
  });

  it('plain and encrypted segments side by side (a rotation mid-chain) are both served', async () => {
    await putWalFile({ ...ws, recipients: undefined }, NAME, segment(1));
    await putWalFile(ws, '000000010000000000000004', segment(2));
    for (const [name, fill] of [
      [NAME, 1],
      ['000000010000000000000004', 2],
    ] as const) {
      const r = await fetch(name, { BACKUP_ENCRYPTION_IDENTITY_FILE: idA });
      expect(r.code, r.out).toBe(0);
      expect(readFileSync(out()).equals(segment(fill))).toBe(true);
    }
  });

  it('history files are encrypted too; their name carries the switch, so keyless readers follow the timelines', async () => {
    const h2 = '1\t0/3000060\tno recovery target specified\n';
    const h3 = `${h2}\n2\t0/5000028\tat restore point "secret-name"\n`;
    expect((await putWalFile(ws, '00000002.history', Buffer.from(h2))).stored).toBe('new');
    expect((await putWalFile(ws, '00000003.history', Buffer.from(h3))).stored).toBe('new');
    const files = stored().sort();
    const tag = '[0-9a-f]{64}';
    expect(files[0]).toMatch(
      new RegExp(`^00000002\\.history-${tag}-00000001-0000000003000060-${tag}\\.gz\\.age$`),
    );
    expect(files[1]).toMatch(
      new RegExp(`^00000003\\.history-${tag}-00000002-0000000005000028-${tag}\\.gz\\.age$`),
    );
    // what age -d | gunzip gives back is the file; nothing of it is readable as stored
    const path = join(store, walPrefix(SYSID), files[1]!);
    expect(readFileSync(path).includes('secret-name')).toBe(false);
    expect(execFileSync('sh', ['-c', `age -d -i ${idA} ${path} | gunzip`], { encoding: 'utf8' })).toBe(h3);
    // re-push: already stored; another history under the name: refused, without the identity
    expect((await putWalFile(ws, '00000003.history', Buffer.from(h3))).stored).toBe('already');
    await expect(
      putWalFile(ws, '00000003.history', Buffer.from(`${h2}2\t0/6000000\tother\n`)),
    ).rejects.toBeInstanceOf(WalConflictError);
    // retention, pitr list and verify read the timelines without any identity
    const histories = await loadHistories(ws.storage, await listPitr(ws.storage, SYSID));
    expect(histories.get(3)).toEqual([
      { parent: 1, switchLsn: 0x3000060n },
      { parent: 2, switchLsn: 0x5000028n },
    ]);
    // recovery gets the file through wal-fetch with the identity, and only with it
    const ok = await fetch('00000003.history', { BACKUP_ENCRYPTION_IDENTITY_FILE: idA });
    expect(ok.code, ok.out).toBe(0);
    expect(readFileSync(out(), 'utf8')).toBe(h3);
    rmSync(out());
    const bad = await fetch('00000003.history', { BACKUP_ENCRYPTION_IDENTITY_FILE: idB });
    expect(bad.code, bad.out).toBe(EXIT.RECOVERY_ABORT);
    expect(existsSync(out())).toBe(false);
    // a missing segment before timeline 3's branch point, with WAL on timeline 3 after it, is a gap:
    // told from the encrypted histories' names, without any identity (plain WAL needs none)
    await putWalFile({ ...ws, recipients: undefined }, '000000030000000000000009', segment(3));
    const gap = await fetch('000000020000000000000004');
    expect(gap.code, gap.out).toBe(EXIT.RECOVERY_ABORT);
    expect(gap.out).toMatch(/the chain has a gap/);
    // a name whose switch does not match the file's own is corrupt, not a timeline to follow
    const moved = files[1]!.replace('0000000005000028', '0000000005000000');
    writeFileSync(join(store, walPrefix(SYSID), moved), readFileSync(path));
    rmSync(path);
    const lied = await fetch('00000003.history', { BACKUP_ENCRYPTION_IDENTITY_FILE: idA });
    expect(lied.code, lied.out).not.toBe(0);
    expect(lied.out).toMatch(/corrupt/);
  });
});
