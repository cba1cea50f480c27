/**
 * What the first page of a WAL segment says about itself. Every segment begins with a long page
 * header: xlp_magic (uint16), xlp_info (uint16), xlp_tli (uint32), xlp_pageaddr (uint64),
 * xlp_rem_len (uint32) and padding to 24 bytes, then xlp_sysid (uint64), xlp_seg_size (uint32) and
 * xlp_xlog_blcksz (uint32): 40 bytes, little-endian on every platform PostgreSQL packages for. A
 * spool file is checked against it before it is stored under a cluster's prefix: a spool reused
 * from another cluster, or a file renamed to another segment's name, must not enter this
 * cluster's chain.
 */
import { sameSystem } from '../db/cluster.js';
import { formatLsn, segmentStart, type WalFileName } from './wal-name.js';

/** XLP_LONG_HEADER in xlp_info. */
const XLP_LONG_HEADER = 0x0002;
export const LONG_PAGE_HEADER_BYTES = 40;

export interface SegmentHeader {
  magic: number;
  sysid: string;
  pageAddress: bigint;
  segmentBytes: number;
}

/** The long header, or undefined where nothing is written yet (pg_receivewal zero-fills first). */
export function segmentHeader(content: Buffer): SegmentHeader | undefined {
  if (content.length < LONG_PAGE_HEADER_BYTES) return undefined;
  const magic = content.readUInt16LE(0);
  if (magic === 0) return undefined;
  if ((content.readUInt16LE(2) & XLP_LONG_HEADER) === 0)
    return { magic, sysid: '0', pageAddress: content.readBigUInt64LE(8), segmentBytes: 0 };
  return {
    magic,
    sysid: content.readBigUInt64LE(24).toString(),
    pageAddress: content.readBigUInt64LE(8),
    segmentBytes: content.readUInt32LE(32),
  };
}

/**
 * Why `content` is not the segment `file` of the cluster `sysid` (undefined: it is). A finished
 * segment starts with its long header; a .partial may have nothing at all written yet (zeros, as
 * pg_receivewal makes it), but never data after an empty start. `content` may be the first bytes
 * only (`whole` false): then an empty start says nothing.
 */
export function foreignSegment(
  content: Buffer,
  file: Extract<WalFileName, { kind: 'segment' }>,
  o: { sysid: string; segmentBytes: number; finished: boolean; whole: boolean },
): Foreign | undefined {
  const not = (why: string): Foreign => ({ why, otherCluster: false });
  const h = segmentHeader(content);
  if (!h) {
    if (o.finished) return not('its first page is empty: it is not a segment pg_receivewal finished');
    if (o.whole && content.some((b) => b !== 0))
      return not(
        'its first page is empty but it holds data further on: pg_receivewal writes a segment from its start',
      );
    return undefined;
  }
  if (h.segmentBytes === 0)
    return not('its first page has no long header: it is not the start of a WAL segment');
  if (!sameSystem(h.sysid, o.sysid))
    return {
      why: `it belongs to the cluster with system identifier ${h.sysid}, not to this one (${o.sysid})`,
      otherCluster: true,
    };
  if (h.segmentBytes !== o.segmentBytes)
    return not(`its header says segments of ${h.segmentBytes} bytes, not this cluster's ${o.segmentBytes}`);
  const start = segmentStart(file.segNo, o.segmentBytes);
  if (h.pageAddress !== start)
    return not(
      `its first page is at ${formatLsn(h.pageAddress)}, not at ${formatLsn(start)} where ${file.name} begins: it was renamed`,
    );
  return undefined;
}

export interface Foreign {
  why: string;
  /** The header names another cluster: the spool was (also) another cluster's. */
  otherCluster: boolean;
}
