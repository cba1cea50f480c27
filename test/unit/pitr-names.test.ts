// WAL names, positions and store keys: the parsers are the edge where names read from the store
// or a spool directory become facts, so anything pg-maintd would not have written is refused.
import { describe, expect, it } from 'vitest';
import {
  formatLsn,
  historyName,
  parseHistory,
  parseLsn,
  parseWalFileName,
  segNoOf,
  segmentName,
  validSegmentBytes,
} from '../../src/pitr/wal-name.js';
import {
  baseKey,
  drillKey,
  parseBaseKey,
  parseDrillKey,
  parseWalKey,
  partialKey,
  walKey,
} from '../../src/pitr/store-keys.js';
import { writtenBytes } from '../../src/pitr/pg-control.js';

const TAG = 'a'.repeat(64);
const SYSID = '7714799526453063512';

describe('WAL names and positions', () => {
  it('reads and writes LSNs as PostgreSQL prints them', () => {
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(formatLsn(parseLsn('0/3000028')!)).toBe('0/3000028');
    for (const bad of ['', '16', '16/', '/1', 'G/1', '1/123456789', '1/2/3', ' 1/ 2'])
      expect(parseLsn(bad)).toBeUndefined();
  });

  it('maps segment numbers to names for 16 MiB and other segment sizes', () => {
    expect(segmentName(1, 0x1_00n + 0x2n)).toBe('000000010000000100000002');
    const seg = parseWalFileName('000000020000000100000002')!;
    expect(seg).toMatchObject({ kind: 'segment', timeline: 2, segNo: 0x102n });
    // 1 GiB segments: four per "log"
    expect(segmentName(1, 5n, 1 << 30)).toBe('000000010000000100000001');
    expect(parseWalFileName('000000010000000000000004', 1 << 30)).toBeUndefined();
    expect(segNoOf(parseLsn('1/2000000')!)).toBe(0x102n);
  });

  it('refuses what is not a WAL file name', () => {
    for (const bad of [
      '00000001000000000000000',
      '0000000100000000000000001',
      '000000010000000000000001.partial',
      '00000000000000000000000A',
      '000000010000000000000100', // segment 0x100 of a log of 0x100 (16 MiB)
      '00000001.History',
      '00000000.history',
      '../00000001.history',
      '000000010000000a00000001',
    ])
      expect(parseWalFileName(bad), bad).toBeUndefined();
    expect(parseWalFileName(historyName(10))).toEqual({
      kind: 'history',
      name: '0000000A.history',
      timeline: 10,
    });
  });

  it('knows the segment sizes PostgreSQL allows', () => {
    expect([1 << 20, 16 << 20, 1 << 30].every(validSegmentBytes)).toBe(true);
    expect([0, 1 << 19, 3 << 20, 2 ** 31, 16.5].some(validSegmentBytes)).toBe(false);
  });

  it('parses a timeline history file, and refuses one with a line it cannot read', () => {
    expect(parseHistory('1\t0/3000090\tno recovery target specified\n\n2\t0/5000000\tbefore 2026\n')).toEqual(
      [
        { parent: 1, switchLsn: 0x3000090n },
        { parent: 2, switchLsn: 0x5000000n },
      ],
    );
    expect(parseHistory('# comment\n')).toEqual([]);
    expect(parseHistory('x\t0/1\n')).toBeUndefined();
    expect(parseHistory('1\tnot-an-lsn\n')).toBeUndefined();
  });

  it('counts the bytes of a WAL file up to its last non-zero byte', () => {
    const b = Buffer.alloc(8192);
    expect(writtenBytes(b)).toBe(0);
    b[100] = 1;
    expect(writtenBytes(b)).toBe(101);
  });
});

describe('PITR store keys', () => {
  it('round-trips every kind of key under the cluster prefix', () => {
    const seg = walKey(SYSID, '000000010000000000000003', TAG);
    expect(seg).toBe(`pitr/${SYSID}/wal/000000010000000000000003-${TAG}.gz`);
    expect(parseWalKey(SYSID, seg)).toMatchObject({ partial: false, tag: TAG, file: { segNo: 3n } });
    const part = partialKey(SYSID, '000000010000000000000004', 0x123456, TAG);
    expect(parseWalKey(SYSID, part)).toMatchObject({
      partial: true,
      validBytes: 0x123456,
      file: { segNo: 4n },
    });
    const hist = walKey(SYSID, '00000002.history', TAG);
    expect(parseWalKey(SYSID, hist)).toMatchObject({ file: { kind: 'history', timeline: 2 } });
    const at = new Date('2026-12-02T10:11:12Z');
    expect(parseBaseKey(SYSID, baseKey(SYSID, at, 'deadbeef'))).toEqual({
      key: `pitr/${SYSID}/base/20261202_101112-deadbeef.tar.gz`,
      at,
      run: 'deadbeef',
      encrypted: false,
    });
    expect(parseDrillKey(SYSID, drillKey(SYSID, at, '0badf00d'))?.at).toEqual(at);
  });

  it('parses encrypted keys (.gz.age with a stored-bytes tag) beside plain ones', () => {
    const STORED = 'c'.repeat(64);
    const seg = walKey(SYSID, '000000010000000000000003', TAG, STORED);
    expect(seg).toBe(`pitr/${SYSID}/wal/000000010000000000000003-${TAG}-${STORED}.gz.age`);
    expect(parseWalKey(SYSID, seg)).toMatchObject({ partial: false, tag: TAG, storedTag: STORED });
    expect(parseWalKey(SYSID, walKey(SYSID, '000000010000000000000003', TAG))?.storedTag).toBeUndefined();
    const part = partialKey(SYSID, '000000010000000000000004', 0x123456, TAG, STORED);
    expect(part.endsWith('.gz.age')).toBe(true);
    expect(parseWalKey(SYSID, part)).toMatchObject({
      partial: true,
      validBytes: 0x123456,
      storedTag: STORED,
    });
    const at = new Date('2026-12-02T10:11:12Z');
    expect(parseBaseKey(SYSID, baseKey(SYSID, at, 'deadbeef', true))).toEqual({
      key: `pitr/${SYSID}/base/20261202_101112-deadbeef.tar.gz.age`,
      at,
      run: 'deadbeef',
      encrypted: true,
    });
    for (const key of [
      `pitr/${SYSID}/wal/000000010000000000000003-${TAG}.gz.age`,
      `pitr/${SYSID}/wal/000000010000000000000003-${TAG}-${STORED}.gz`,
      `pitr/${SYSID}/wal/00000002.history-${TAG}-${STORED}.gz.age`,
      // a timeline branches from an older one only
      `pitr/${SYSID}/wal/00000002.history-${TAG}-00000002-0000000003000060-${STORED}.gz.age`,
      `pitr/${SYSID}/wal/00000002.history-${TAG}-00000000-0000000003000060-${STORED}.gz.age`,
      `pitr/${SYSID}/wal/00000002.history-${TAG}-00000001-0000000003000060.gz`,
    ])
      expect(parseWalKey(SYSID, key), key).toBeUndefined();
    const lineage = { parent: 1, switchLsn: 0x3000060n };
    const hist = walKey(SYSID, '00000002.history', TAG, STORED, lineage);
    expect(hist).toBe(`pitr/${SYSID}/wal/00000002.history-${TAG}-00000001-0000000003000060-${STORED}.gz.age`);
    expect(parseWalKey(SYSID, hist)).toMatchObject({ storedTag: STORED, lineage, file: { timeline: 2 } });
  });

  it('refuses keys pg-maintd never writes, and another cluster’s', () => {
    const bad = [
      `pitr/${SYSID}/wal/000000010000000000000003-${TAG}`,
      `pitr/${SYSID}/wal/000000010000000000000003-${'A'.repeat(64)}.gz`,
      `pitr/${SYSID}/wal/000000010000000000000003.gz`,
      `pitr/${SYSID}/wal/x/000000010000000000000003-${TAG}.gz`,
      `pitr/${SYSID}/wal/000000010000000000000003.partial-${TAG}.gz`,
      `pitr/${SYSID}/wal/00000002.history.gz`,
      `pitr/1${SYSID}/wal/000000010000000000000003-${TAG}.gz`,
    ];
    for (const key of bad) expect(parseWalKey(SYSID, key), key).toBeUndefined();
    expect(parseBaseKey(SYSID, `pitr/${SYSID}/base/20261340_101112-deadbeef.tar.gz`)).toBeUndefined();
    expect(
      parseBaseKey(SYSID, `pitr/${SYSID}/base/20261202_101112-deadbeef.tar.gz.manifest.json`),
    ).toBeUndefined();
    expect(() => walKey('../x', '000000010000000000000003', TAG)).toThrow(/not a system identifier/);
  });
});
