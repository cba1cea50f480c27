// How a drill judges the heartbeat row it restored, and the recovery target it writes; the restores
// themselves run against a real PostgreSQL in test/integration/pitr-roundtrip.test.ts.
import { describe, expect, it } from 'vitest';
import { judge } from '../../src/pitr/drill.js';
import { recoveryTime } from '../../src/pitr/restore.js';

const S = 1_000_000n; // a second in microseconds

describe('judge', () => {
  it('passes on the heartbeat numbered just before the anchor, however far before the target it is', () => {
    expect(judge(1n, 41n, 41n, 1000)).toEqual({ result: 'ok', reason: undefined });
    expect(judge(30n * S, 41n, 41n, 1000)).toEqual({ result: 'ok', reason: undefined });
  });

  it('fails on an earlier heartbeat, saying how many recovery missed', () => {
    const r = judge(2n * S, 39n, 41n, 5000);
    expect(r.result).toBe('failed');
    expect(r.reason).toBe(
      'heartbeat number 39 was recovered, but heartbeat 41 committed before the target: recovery stopped 2 heartbeat(s) short of it',
    );
  });

  it('fails on the anchor itself or a later one: recovery went past the target', () => {
    expect(judge(1n, 42n, 41n, 1000).reason).toMatch(
      /heartbeat number 42 was recovered, but the target lies before heartbeat 42: recovery went past it/,
    );
    expect(judge(-5n, 41n, 41n, 1000)).toEqual({
      result: 'failed',
      reason: 'a heartbeat 0.000005 s after the target was recovered: recovery went past it',
    });
  });

  it('without numbers (a table from before them) measures against one interval and a second', () => {
    expect(judge(6n * S, undefined, 41n, 5000).result).toBe('ok');
    expect(judge(6n * S + 1n, undefined, 41n, 5000)).toEqual({
      result: 'failed',
      reason:
        'the newest heartbeat recovered is 6.0 s before the target, more than one PITR_HEARTBEAT_INTERVAL',
    });
    expect(judge(2n * S, 12n, undefined, 1000).result).toBe('ok');
  });
});

describe('recoveryTime', () => {
  it("writes PostgreSQL's form, to the microsecond", () => {
    const t = new Date('2026-12-03T12:49:51.123Z');
    expect(recoveryTime(t)).toBe('2026-12-03 12:49:51.123000+00');
    expect(recoveryTime(t, 456)).toBe('2026-12-03 12:49:51.123456+00');
    expect(recoveryTime(t, 7)).toBe('2026-12-03 12:49:51.123007+00');
  });
});
