// WAL objects in a directory store and the chain across timelines: what a restore, `pitr verify` and
// retention decide from. The WAL bytes are not parsed anywhere here, so small made-up segments
// (1 MiB segment size, the smallest PostgreSQL allows) stand in for real ones.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { Signer } from '../../src/backup/signing.js';
import type { BaseManifest } from '../../src/pitr/base-manifest.js';
import {
  listPitr,
  timelinePath,
  walChain,
  newestTimeline,
  loadHistories,
} from '../../src/pitr/pitr-catalog.js';
import { walPrefix } from '../../src/pitr/store-keys.js';
import { resolveWal } from '../../src/pitr/wal-fetch.js';
import {
  WalConflictError,
  fetchWalFile,
  putPartial,
  putWalFile,
  storedUnder,
} from '../../src/pitr/wal-object.js';
import { historyName, segmentName } from '../../src/pitr/wal-name.js';
import { tempDir } from '../support/temp.js';
import { segmentBytesOf } from '../../src/pitr/pg-control.js';
import { pushWalFile } from '../../src/pitr/wal-push.js';

const SYSID = '7000000000000000001';
const MIB = 1 << 20;
const stores: FsStorage[] = [];
afterEach(() => stores.splice(0).forEach((s) => s.close()));

function store() {
  const dir = tempDir('pitr-chain-');
  const storage = new FsStorage(dir);
  stores.push(storage);
  return { dir, ws: { storage, sysid: SYSID } };
}

function segment(seed: number): Buffer {
  const b = Buffer.alloc(MIB);
  b.fill(seed % 251, 0, 4096);
  return b;
}

function base(timeline: number, startSeg: bigint, stopSeg: bigint, stopOffset = 0n): BaseManifest {
  const lsn = (seg: bigint, off = 0n) => {
    const at = seg * BigInt(MIB) + off;
    return `${(at >> 32n).toString(16).toUpperCase()}/${(at & 0xffffffffn).toString(16).toUpperCase()}`;
  };
  return {
    timeline,
    startLsn: lsn(startSeg),
    stopLsn: lsn(stopSeg, stopOffset),
    segmentBytes: MIB,
  } as unknown as BaseManifest;
}

async function putSegments(ws: ReturnType<typeof store>['ws'], timeline: number, segs: number[]) {
  for (const n of segs) await putWalFile(ws, segmentName(timeline, BigInt(n), MIB), segment(n));
}

describe('WAL objects', () => {
  it('stores once, treats the same bytes as already stored, and refuses different ones', async () => {
    const { ws } = store();
    const name = segmentName(1, 3n, MIB);
    expect((await putWalFile(ws, name, segment(3))).stored).toBe('new');
    expect((await putWalFile(ws, name, segment(3))).stored).toBe('already');
    await expect(putWalFile(ws, name, segment(4))).rejects.toBeInstanceOf(WalConflictError);
    const [stored] = await storedUnder(ws, name, MIB);
    expect((await fetchWalFile(ws, stored!)).equals(segment(3))).toBe(true);
  });

  it('names a corrupt object when it is fetched', async () => {
    const { dir, ws } = store();
    const name = segmentName(1, 7n, MIB);
    await putWalFile(ws, name, segment(7));
    const [stored] = await storedUnder(ws, name, MIB);
    const path = join(dir, stored!.key);
    const bytes = readFileSync(path);
    bytes[bytes.length - 12] = bytes[bytes.length - 12]! ^ 0xff; // inside the deflate stream or its CRC
    writeFileSync(path, bytes);
    await expect(fetchWalFile(ws, stored!)).rejects.toThrow(
      new RegExp(`WAL object ${stored!.key} is corrupt`),
    );
  });

  it('binds names to the signing key when there is one', async () => {
    const { ws } = store();
    const signed = { ...ws, signer: new Signer([Buffer.from('k'.repeat(32))]) };
    const name = segmentName(1, 9n, MIB);
    await putWalFile(signed, name, segment(9));
    const [stored] = await storedUnder(ws, name, MIB);
    expect((await fetchWalFile(signed, stored!)).equals(segment(9))).toBe(true);
    // the same bytes written by someone without the key (a plain SHA-256 tag) do not pass
    const other = segmentName(1, 10n, MIB);
    await putWalFile(ws, other, segment(10));
    const [forged] = await storedUnder(ws, other, MIB);
    await expect(fetchWalFile(signed, forged!)).rejects.toThrow(/does not match the tag/);
  });

  it('a partial copied under a larger byte count is refused, signed or not', async () => {
    const { dir, ws } = store();
    const signed = { ...ws, signer: new Signer([Buffer.from('k'.repeat(32))]) };
    for (const [n, w] of [ws, signed].entries()) {
      const name = segmentName(1, 11n + BigInt(n), MIB);
      const { key } = await putPartial(w, name, segment(11), 4096);
      const raised = key.replace('.partial.00001000-', '.partial.ffffffff-');
      copyFileSync(join(dir, key), join(dir, raised));
      const copies = await storedUnder(w, name, MIB);
      expect(copies[0]!.key).toBe(raised);
      await expect(fetchWalFile(w, copies[0]!)).rejects.toThrow(/is corrupt/);
      expect((await fetchWalFile(w, copies[1]!)).equals(segment(11))).toBe(true);
    }
  });

  it('a signed object of another cluster is refused, and does not block archiving the real one', async () => {
    const { dir, ws } = store();
    const signer = new Signer([Buffer.from('k'.repeat(32))]);
    const mine = { ...ws, signer };
    const theirs = { ...ws, sysid: '7000000000000000002', signer };
    const name = segmentName(1, 13n, MIB);
    const { key } = await putWalFile(theirs, name, segment(99));
    const planted = join(dir, walPrefix(SYSID), key.slice(walPrefix(theirs.sysid).length));
    mkdirSync(join(dir, walPrefix(SYSID)), { recursive: true });
    copyFileSync(join(dir, key), planted);
    const [copy] = await storedUnder(mine, name, MIB);
    await expect(fetchWalFile(mine, copy!)).rejects.toThrow(/does not match the tag/);
    expect((await putWalFile(mine, name, segment(13))).stored).toBe('new');
    const r = await resolveWal({ ...mine, segmentBytes: MIB }, name);
    expect(r.kind === 'found' && r.content.equals(segment(13))).toBe(true);
    // a planted junk object under the name does not either
    const other = segmentName(1, 14n, MIB);
    writeFileSync(join(dir, walPrefix(SYSID), `${other}-${'0'.repeat(64)}.gz`), 'junk');
    expect((await putWalFile(ws, other, segment(14))).stored).toBe('new');
    await expect(putWalFile(ws, other, segment(15))).rejects.toBeInstanceOf(WalConflictError);
  });

  it('reads no more than a segment (a history file: 1 MiB) back, compressed or not', async () => {
    const { dir, ws } = store();
    const small = { ...ws, segmentBytes: MIB };
    const walDir = join(dir, walPrefix(SYSID));
    mkdirSync(walDir, { recursive: true });
    const bomb = Buffer.alloc(64 * MIB, 1);
    const tag = createHash('sha256').update(bomb).digest('hex');
    const seg = segmentName(1, 20n, MIB);
    writeFileSync(join(walDir, `${seg}-${tag}.gz`), gzipSync(bomb));
    writeFileSync(join(walDir, `${historyName(3)}-${tag}.gz`), gzipSync(bomb));
    const big = segmentName(1, 21n, MIB);
    writeFileSync(join(walDir, `${big}-${tag}.gz`), randomBytes(3 * MIB));
    for (const name of [seg, historyName(3)]) {
      const [copy] = await storedUnder(small, name, MIB);
      await expect(fetchWalFile(small, copy!)).rejects.toThrow(/is corrupt: it does not decompress/);
    }
    const [copy] = await storedUnder(small, big, MIB);
    await expect(fetchWalFile(small, copy!)).rejects.toThrow(/is corrupt: it is larger than/);
    // a planted bomb is no conflict either: archiving the real segment goes on
    expect((await putWalFile(small, seg, segment(20))).stored).toBe('new');
  });

  it('orders partials by the WAL they hold, never replacing the finished segment', async () => {
    const { ws } = store();
    const name = segmentName(1, 5n, MIB);
    await putPartial(ws, name, segment(1), 4096);
    await putPartial(ws, name, segment(2), 8192);
    await putWalFile(ws, name, segment(5));
    const copies = await storedUnder(ws, name, MIB);
    expect(copies.map((c) => (c.partial ? c.validBytes : 'finished'))).toEqual(['finished', 8192, 4096]);
  });
});

describe('the WAL chain', () => {
  it('reaches from a base backup as far as segments follow each other, and names the first gap', async () => {
    const { ws } = store();
    await putSegments(ws, 1, [2, 3, 4, 6, 7]);
    const listing = { ...(await listPitr(ws.storage, SYSID)), segmentBytes: MIB };
    const path = timelinePath(1, new Map());
    const chain = walChain(listing, base(1, 2n, 3n), path);
    expect(chain.last?.segNo).toBe(4n);
    expect(chain.consistent).toBe(true);
    expect(chain.gap).toEqual({ timeline: 1, segment: segmentName(1, 5n, MIB) });
    // a base whose stop segment is not stored yet is not restorable
    expect(walChain(listing, base(1, 6n, 9n), path).consistent).toBe(false);
  });

  it('uses the partial of the segment after the last finished one', async () => {
    const { ws } = store();
    await putSegments(ws, 1, [2, 3]);
    await putPartial(ws, segmentName(1, 4n, MIB), segment(44), 5000);
    const listing = { ...(await listPitr(ws.storage, SYSID)), segmentBytes: MIB };
    const chain = walChain(listing, base(1, 2n, 4n), timelinePath(1, new Map()));
    expect(chain.gap).toBeUndefined();
    expect(chain.partial?.partial && chain.partial.validBytes).toBe(5000);
    expect(chain.consistent).toBe(true);
  });

  it('a partial of the stop segment makes the base consistent only if it holds WAL up to the stop position', async () => {
    const { ws } = store();
    await putSegments(ws, 1, [2, 3]);
    await putPartial(ws, segmentName(1, 4n, MIB), segment(44), 0x1000);
    const listing = { ...(await listPitr(ws.storage, SYSID)), segmentBytes: MIB };
    const path = timelinePath(1, new Map());
    expect(walChain(listing, base(1, 2n, 4n, 0x2000n), path).consistent).toBe(false);
    expect(walChain(listing, base(1, 2n, 4n, 0x1000n), path).consistent).toBe(true);
    expect(walChain(listing, base(1, 2n, 4n, 0x800n), path).consistent).toBe(true);
  });

  it('follows a promotion onto the new timeline from the segment holding the switch', async () => {
    const { ws } = store();
    await putSegments(ws, 1, [2, 3, 4]);
    // timeline 2 branched inside segment 5 of timeline 1: segment 5 and later come from timeline 2
    await putWalFile(
      ws,
      historyName(2),
      Buffer.from(`1\t0/${(5 * MIB + 0x100).toString(16).toUpperCase()}\tno recovery target specified\n`),
    );
    await putSegments(ws, 2, [5, 6]);
    const listing = { ...(await listPitr(ws.storage, SYSID)), segmentBytes: MIB };
    const histories = await loadHistories(ws.storage, listing);
    expect(newestTimeline(listing)).toBe(2);
    const chain = walChain(listing, base(1, 2n, 3n), timelinePath(2, histories));
    expect(chain.last).toMatchObject({ timeline: 2, segNo: 6n });
    expect(chain.segments).toBe(5);
    expect(chain.gap).toBeUndefined();
    // a segment missing before the switch is a gap, even though later timelines go on
    const { ws: ws2 } = store();
    await putSegments(ws2, 1, [2, 4]);
    await putWalFile(ws2, historyName(2), Buffer.from(`1\t0/${(5 * MIB).toString(16).toUpperCase()}\tx\n`));
    await putSegments(ws2, 2, [5]);
    const l2 = { ...(await listPitr(ws2.storage, SYSID)), segmentBytes: MIB };
    expect(walChain(l2, base(1, 2n, 2n), timelinePath(2, await loadHistories(ws2.storage, l2))).gap).toEqual({
      timeline: 1,
      segment: segmentName(1, 3n, MIB),
    });
  });

  it('ignores objects under the cluster prefix that pg-maintd would not have written', async () => {
    const { dir, ws } = store();
    await putSegments(ws, 1, [2]);
    const walDir = join(dir, walPrefix(SYSID));
    writeFileSync(join(walDir, 'evil.gz'), 'x');
    writeFileSync(join(walDir, `${segmentName(1, 3n, MIB)}.gz`), 'x');
    const listing = { ...(await listPitr(ws.storage, SYSID)), segmentBytes: MIB };
    expect([...(listing.segments.get(1)?.keys() ?? [])]).toEqual([2n]);
    expect(readdirSync(walDir)).toHaveLength(3);
  });
});

describe('segment sizes other than 16 MiB', () => {
  it('wal-push and wal-fetch map names >= 0x100 in the segment field with the cluster size', async () => {
    const { ws } = store();
    const small = { ...ws, segmentBytes: MIB };
    const dataDir = tempDir('pitr-segsize-');
    mkdirSync(join(dataDir, 'global'));
    const control = Buffer.alloc(8192);
    control.writeBigUInt64LE(BigInt(SYSID), 0);
    control.writeUInt32LE(1300, 8);
    control.writeUInt32LE(MIB, 228);
    writeFileSync(join(dataDir, 'global', 'pg_control'), control);
    expect(await segmentBytesOf(dataDir)).toBe(MIB);
    control.writeUInt32LE(12345, 228);
    writeFileSync(join(dataDir, 'global', 'pg_control'), control);
    expect(await segmentBytesOf(dataDir)).toBeUndefined();
    // wal-push learns the size from the segment file itself when pg_control does not say
    const seg = (n: number) => segmentName(1, BigInt(n), MIB);
    expect(seg(0x150)).toBe('000000010000000000000150');
    const file = join(dataDir, seg(0x150));
    writeFileSync(file, segment(0x150));
    expect((await pushWalFile(ws, file)).kind).toBe('segment');
    await putWalFile(small, seg(0x152), segment(0x152));
    const r = await resolveWal(small, seg(0x150));
    expect(r.kind === 'found' && r.content.equals(segment(0x150))).toBe(true);
    await expect(resolveWal(ws, seg(0x151), undefined, MIB)).rejects.toThrow(/missing .* later WAL/);
  });
});
