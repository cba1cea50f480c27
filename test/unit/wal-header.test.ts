// What a spool file's first page says about itself, checked before it is stored under a cluster's
// prefix. The headers are built here byte by byte as PostgreSQL lays them out; a real other
// cluster's WAL is refused in test/integration/wal-archiver.test.ts.
import { describe, expect, it } from 'vitest';
import { foreignSegment, segmentHeader } from '../../src/pitr/wal-header.js';
import { parseWalFileName } from '../../src/pitr/wal-name.js';

const SEG = 16 << 20;
const SYSID = '7715058967791590117';

function page(o: { sysid?: bigint; pageAddr?: bigint; segSize?: number; long?: boolean } = {}): Buffer {
  const b = Buffer.alloc(8192);
  b.writeUInt16LE(0xd110, 0); // xlp_magic of PostgreSQL 15
  b.writeUInt16LE(o.long === false ? 0 : 0x0002, 2);
  b.writeUInt32LE(1, 4);
  b.writeBigUInt64LE(o.pageAddr ?? 3n * BigInt(SEG), 8);
  b.writeBigUInt64LE(o.sysid ?? BigInt(SYSID), 24);
  b.writeUInt32LE(o.segSize ?? SEG, 32);
  b.writeUInt32LE(8192, 36);
  return b;
}

const seg3 = parseWalFileName('000000010000000000000003') as Extract<
  ReturnType<typeof parseWalFileName>,
  { kind: 'segment' }
>;

describe('segment headers', () => {
  it("accepts this cluster's segment, and a file with nothing written yet", () => {
    expect(segmentHeader(page())).toEqual({
      magic: 0xd110,
      sysid: SYSID,
      pageAddress: 3n * BigInt(SEG),
      segmentBytes: SEG,
    });
    expect(foreignSegment(page(), seg3, SYSID, SEG)).toBeUndefined();
    expect(foreignSegment(Buffer.alloc(SEG), seg3, SYSID, SEG)).toBeUndefined();
    expect(foreignSegment(Buffer.alloc(10), seg3, SYSID, SEG)).toBeUndefined();
  });

  it("refuses another cluster's segment, another segment size, a renamed file, a page that starts no segment", () => {
    expect(foreignSegment(page({ sysid: 7000000000000000001n }), seg3, SYSID, SEG)).toBe(
      `it belongs to the cluster with system identifier 7000000000000000001, not to this one (${SYSID})`,
    );
    expect(foreignSegment(page({ segSize: 1 << 20 }), seg3, SYSID, SEG)).toMatch(
      /segments of 1048576 bytes, not this cluster's 16777216/,
    );
    expect(foreignSegment(page({ pageAddr: 5n * BigInt(SEG) }), seg3, SYSID, SEG)).toBe(
      'its first page is at 0/5000000, not at 0/3000000 where 000000010000000000000003 begins: it was renamed',
    );
    expect(foreignSegment(page({ long: false }), seg3, SYSID, SEG)).toMatch(/no long header/);
  });
});
