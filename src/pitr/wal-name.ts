/**
 * PostgreSQL's WAL positions and file names, as the server writes them. An LSN is a 64-bit byte
 * position ("16/B374D848"); a segment file is named by its timeline and segment number, in 24 hex
 * digits: TTTTTTTT (timeline) XXXXXXXX (high 32 bits of the segment number in "log" units)
 * YYYYYYYY (the segment within that log). A timeline's history file is TTTTTTTT.history.
 * Every name read from the store or a directory goes through these parsers; anything else is not WAL.
 */

export const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;
const SEGMENT_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const HISTORY_RE = /^([0-9A-F]{8})\.history$/;
const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export type WalFileName =
  | { kind: 'segment'; name: string; timeline: number; segNo: bigint }
  | { kind: 'history'; name: string; timeline: number };

/** Whether the segment size is one PostgreSQL allows (a power of two from 1 MiB to 1 GiB). */
export function validSegmentBytes(n: number): boolean {
  return Number.isInteger(n) && n >= 1 << 20 && n <= 1 << 30 && (n & (n - 1)) === 0;
}

function segmentsPerLog(segmentBytes: number): bigint {
  return 0x1_0000_0000n / BigInt(segmentBytes);
}

/** A WAL file name (segment or history), or undefined for anything else. */
export function parseWalFileName(
  name: string,
  segmentBytes = DEFAULT_SEGMENT_BYTES,
): WalFileName | undefined {
  const h = HISTORY_RE.exec(name);
  if (h) {
    const timeline = parseInt(h[1]!, 16);
    return timeline >= 1 ? { kind: 'history', name, timeline } : undefined;
  }
  const m = SEGMENT_RE.exec(name);
  if (!m) return undefined;
  const timeline = parseInt(m[1]!, 16);
  const log = BigInt(parseInt(m[2]!, 16));
  const seg = BigInt(parseInt(m[3]!, 16));
  const perLog = segmentsPerLog(segmentBytes);
  if (timeline < 1 || seg >= perLog) return undefined;
  return { kind: 'segment', name, timeline, segNo: log * perLog + seg };
}

export function segmentName(timeline: number, segNo: bigint, segmentBytes = DEFAULT_SEGMENT_BYTES): string {
  const perLog = segmentsPerLog(segmentBytes);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(segNo / perLog)}${hex(segNo % perLog)}`;
}

export function historyName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/** "16/B374D848" as a byte position; undefined when it is not an LSN. */
export function parseLsn(text: string): bigint | undefined {
  const m = LSN_RE.exec(text.trim());
  if (!m) return undefined;
  return (BigInt(parseInt(m[1]!, 16)) << 32n) | BigInt(parseInt(m[2]!, 16));
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffff_ffffn).toString(16).toUpperCase()}`;
}

/** The segment holding the byte at `lsn`. */
export function segNoOf(lsn: bigint, segmentBytes = DEFAULT_SEGMENT_BYTES): bigint {
  return lsn / BigInt(segmentBytes);
}

/** The first byte position of a segment. */
export function segmentStart(segNo: bigint, segmentBytes = DEFAULT_SEGMENT_BYTES): bigint {
  return segNo * BigInt(segmentBytes);
}

/**
 * A timeline history file's lines: "<parent tli>\t<switch LSN>\t<reason>". Comments and blank lines
 * are skipped; a line that does not parse makes the whole file unusable (undefined).
 */
export interface TimelineSwitch {
  parent: number;
  switchLsn: bigint;
}

export function parseHistory(text: string): TimelineSwitch[] | undefined {
  const out: TimelineSwitch[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [tli, lsn] = line.split(/\s+/);
    const parent = Number(tli);
    const switchLsn = lsn === undefined ? undefined : parseLsn(lsn);
    if (!Number.isInteger(parent) || parent < 1 || switchLsn === undefined) return undefined;
    out.push({ parent, switchLsn });
  }
  return out;
}
