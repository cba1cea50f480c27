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

const finished = { sysid: SYSID, segmentBytes: SEG, finished: true, whole: true };
const partial = { ...finished, finished: false };

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
    expect(foreignSegment(page(), seg3, finished)).toBeUndefined();
    expect(foreignSegment(Buffer.alloc(SEG), seg3, partial)).toBeUndefined();
    expect(foreignSegment(Buffer.alloc(10), seg3, partial)).toBeUndefined();
  });

  it("refuses another cluster's segment, another segment size, a renamed file, a page that starts no segment", () => {
    expect(foreignSegment(page({ sysid: 7000000000000000001n }), seg3, finished)?.why).toBe(
      `it belongs to the cluster with system identifier 7000000000000000001, not to this one (${SYSID})`,
    );
    expect(foreignSegment(page({ segSize: 1 << 20 }), seg3, finished)?.why).toMatch(
      /segments of 1048576 bytes, not this cluster's 16777216/,
    );
    expect(foreignSegment(page({ pageAddr: 5n * BigInt(SEG) }), seg3, finished)?.why).toBe(
      'its first page is at 0/5000000, not at 0/3000000 where 000000010000000000000003 begins: it was renamed',
    );
    expect(foreignSegment(page({ long: false }), seg3, finished)?.why).toMatch(/no long header/);
    expect(foreignSegment(page({ sysid: 7000000000000000001n }), seg3, finished)?.otherCluster).toBe(true);
    expect(foreignSegment(page({ pageAddr: 0n }), seg3, finished)?.otherCluster).toBe(false);
  });

  it('refuses a finished segment with an empty start, and a .partial with data after an empty start', () => {
    const late = Buffer.alloc(SEG);
    late.fill(0x41, 8192, 24576);
    expect(foreignSegment(Buffer.alloc(SEG), seg3, finished)?.why).toMatch(/first page is empty/);
    expect(foreignSegment(late, seg3, partial)?.why).toMatch(/holds data further on/);
    // only the head read (the sweep): an empty start says nothing yet
    expect(foreignSegment(Buffer.alloc(40), seg3, { ...partial, whole: false })).toBeUndefined();
  });

  it('takes a system identifier written signed (pg_control_system) as the same cluster', () => {
    const big = 0x8000000000000001n; // a cluster made after 2038: negative as PostgreSQL's bigint
    const signed = BigInt.asIntN(64, big).toString();
    expect(foreignSegment(page({ sysid: big }), seg3, { ...finished, sysid: signed })).toBeUndefined();
  });
});
