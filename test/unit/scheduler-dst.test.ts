// The scheduler across daylight-saving changes, in the zone's wall-clock time (SCHEDULE_TZ):
// - a slot in the skipped hour (the gap) runs once, right after the jump, however many slots fall in it;
// - a slot in the repeated hour runs once, at its first occurrence;
// - the slot passed to the job (recorded in manifests, compared across replicas) is an instant every
//   replica computes alike, and the slots of a job are strictly increasing.
// A DST change cannot be made to happen on this machine at will: fake timers move "now" (Date,
// performance, setInterval) through the change. The zone rules themselves are the real ones
// (Intl, the ICU time zone data Node ships); the scheduler reads nothing else from the clock.
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CATCH_UP_AFTER_MS, Scheduler } from '../../src/schedule/scheduler.js';
import { createLogger } from '../../src/log/logger.js';

const logger = createLogger({ level: 'silent', format: 'json' });

interface Run {
  /** The slot passed to the job, UTC. */
  tick: string;
  /** How long after its slot the run started (ms). */
  lateMs: number;
}

/** The runs of one job from `from` to `to` (UTC instants), with the clock moving as usual. */
async function runsBetween(timezone: string, cron: string, from: string, to: string): Promise<Run[]> {
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
    now: new Date(from),
  });
  const runs: Run[] = [];
  const s = new Scheduler({ maxStallMs: 5000, logger });
  s.addJob({
    name: 'job',
    cron,
    timezone,
    run: async (tick) => void runs.push({ tick: tick.toISOString(), lateMs: Date.now() - tick.getTime() }),
  });
  await s.start();
  try {
    await vi.advanceTimersByTimeAsync(Date.parse(to) - Date.parse(from));
  } finally {
    await s.stop();
  }
  return runs;
}

function ticks(runs: Run[]): string[] {
  return runs.map((r) => r.tick.replace(/\.000Z$/, 'Z'));
}

/** Every run started promptly (no slot waited for the catch-up), and the slots strictly increase. */
function expectPromptAndIncreasing(runs: Run[]) {
  for (const r of runs) expect(r.lateMs, r.tick).toBeLessThan(CATCH_UP_AFTER_MS);
  for (let i = 1; i < runs.length; i++) expect(runs[i]!.tick > runs[i - 1]!.tick, runs[i]!.tick).toBe(true);
}

interface Case {
  zone: string;
  change: string;
  cron: string;
  from: string;
  to: string;
  expected: string[];
}

// Transition instants (checked with Intl): Berlin 2026-03-29T01:00Z (02:00 CET -> 03:00 CEST) and
// 2026-10-25T01:00Z (03:00 CEST -> 02:00 CET); New York 2026-03-08T07:00Z (02:00 EST -> 03:00 EDT)
// and 2026-11-01T06:00Z (02:00 EDT -> 01:00 EST); Lord Howe 2026-04-04T15:00Z (02:00 +11 -> 01:30
// +10:30) and 2026-10-03T15:30Z (02:00 +10:30 -> 02:30 +11); Havana 2026-03-08T05:00Z (00:00 -> 01:00,
// midnight skipped) and 2026-11-01T05:00Z (01:00 -> 00:00, midnight repeated).
const CASES: Case[] = [
  // --- Europe/Berlin, spring forward: 02:00-02:59 does not exist on 2026-03-29
  {
    zone: 'Europe/Berlin',
    change: 'spring forward',
    cron: '0 2 * * *',
    from: '2026-03-27T22:00:00Z',
    to: '2026-03-30T03:00:00Z',
    // 02:00 CET, then the first instant after the jump (03:00 CEST), then 02:00 CEST
    expected: ['2026-03-28T01:00:00Z', '2026-03-29T01:00:00Z', '2026-03-30T00:00:00Z'],
  },
  {
    zone: 'Europe/Berlin',
    change: 'spring forward',
    cron: '*/15 * * * *',
    from: '2026-03-28T23:50:00Z',
    to: '2026-03-29T01:40:00Z',
    // 01:00 ... 01:45 CET; 02:00-02:45 and 03:00 CEST are one run at the jump; 03:15 CEST ...
    expected: [
      '2026-03-29T00:00:00Z',
      '2026-03-29T00:15:00Z',
      '2026-03-29T00:30:00Z',
      '2026-03-29T00:45:00Z',
      '2026-03-29T01:00:00Z',
      '2026-03-29T01:15:00Z',
      '2026-03-29T01:30:00Z',
    ],
  },
  {
    zone: 'Europe/Berlin',
    change: 'spring forward',
    cron: '30 */15 * * * *',
    from: '2026-03-29T00:40:00Z',
    to: '2026-03-29T01:20:00Z',
    // 01:45:30 CET; the four slots 02:00:30 ... 02:45:30 run once, at the jump; then 03:00:30 CEST
    expected: [
      '2026-03-29T00:45:30Z',
      '2026-03-29T01:00:00Z',
      '2026-03-29T01:00:30Z',
      '2026-03-29T01:15:30Z',
    ],
  },
  // --- Europe/Berlin, fall back: 02:00-02:59 happens twice on 2026-10-25 (CEST, then CET)
  {
    zone: 'Europe/Berlin',
    change: 'fall back',
    cron: '0 2 * * *',
    from: '2026-10-23T22:00:00Z',
    to: '2026-10-26T03:00:00Z',
    expected: ['2026-10-24T00:00:00Z', '2026-10-25T00:00:00Z', '2026-10-26T01:00:00Z'],
  },
  {
    zone: 'Europe/Berlin',
    change: 'fall back',
    cron: '*/15 * * * *',
    from: '2026-10-24T23:50:00Z',
    to: '2026-10-25T02:20:00Z',
    // 02:00 ... 02:45 CEST; not again at 02:00 ... 02:45 CET; then 03:00 CET
    expected: [
      '2026-10-25T00:00:00Z',
      '2026-10-25T00:15:00Z',
      '2026-10-25T00:30:00Z',
      '2026-10-25T00:45:00Z',
      '2026-10-25T02:00:00Z',
      '2026-10-25T02:15:00Z',
    ],
  },
  {
    zone: 'Europe/Berlin',
    change: 'fall back',
    cron: '30 */15 * * * *',
    from: '2026-10-25T00:40:00Z',
    to: '2026-10-25T02:20:00Z',
    expected: ['2026-10-25T00:45:30Z', '2026-10-25T02:00:30Z', '2026-10-25T02:15:30Z'],
  },
  // --- America/New_York, spring forward: 02:00-02:59 does not exist on 2026-03-08
  {
    zone: 'America/New_York',
    change: 'spring forward',
    cron: '0 2 * * *',
    from: '2026-03-07T05:00:00Z',
    to: '2026-03-09T09:00:00Z',
    expected: ['2026-03-07T07:00:00Z', '2026-03-08T07:00:00Z', '2026-03-09T06:00:00Z'],
  },
  {
    zone: 'America/New_York',
    change: 'spring forward',
    cron: '*/15 * * * *',
    from: '2026-03-08T06:20:00Z',
    to: '2026-03-08T07:20:00Z',
    expected: [
      '2026-03-08T06:30:00Z',
      '2026-03-08T06:45:00Z',
      '2026-03-08T07:00:00Z',
      '2026-03-08T07:15:00Z',
    ],
  },
  {
    zone: 'America/New_York',
    change: 'spring forward',
    cron: '30 */15 * * * *',
    from: '2026-03-08T06:40:00Z',
    to: '2026-03-08T07:20:00Z',
    expected: [
      '2026-03-08T06:45:30Z',
      '2026-03-08T07:00:00Z',
      '2026-03-08T07:00:30Z',
      '2026-03-08T07:15:30Z',
    ],
  },
  // --- America/New_York, fall back: 01:00-01:59 happens twice on 2026-11-01 (EDT, then EST)
  {
    zone: 'America/New_York',
    change: 'fall back',
    cron: '0 2 * * *',
    from: '2026-10-31T04:00:00Z',
    to: '2026-11-02T09:00:00Z',
    // 02:00 is not repeated in New York (the clock goes from 01:59 EDT to 01:00 EST)
    expected: ['2026-10-31T06:00:00Z', '2026-11-01T07:00:00Z', '2026-11-02T07:00:00Z'],
  },
  {
    zone: 'America/New_York',
    change: 'fall back',
    cron: '30 1 * * *',
    from: '2026-10-31T04:00:00Z',
    to: '2026-11-02T09:00:00Z',
    expected: ['2026-10-31T05:30:00Z', '2026-11-01T05:30:00Z', '2026-11-02T06:30:00Z'],
  },
  {
    zone: 'America/New_York',
    change: 'fall back',
    cron: '*/15 * * * *',
    from: '2026-11-01T04:50:00Z',
    to: '2026-11-01T07:20:00Z',
    expected: [
      '2026-11-01T05:00:00Z',
      '2026-11-01T05:15:00Z',
      '2026-11-01T05:30:00Z',
      '2026-11-01T05:45:00Z',
      '2026-11-01T07:00:00Z',
      '2026-11-01T07:15:00Z',
    ],
  },
  {
    zone: 'America/New_York',
    change: 'fall back',
    cron: '30 */15 * * * *',
    from: '2026-11-01T05:40:00Z',
    to: '2026-11-01T07:20:00Z',
    expected: ['2026-11-01T05:45:30Z', '2026-11-01T07:00:30Z', '2026-11-01T07:15:30Z'],
  },
  // --- Australia/Lord_Howe: a 30-minute change
  {
    zone: 'Australia/Lord_Howe',
    change: 'spring forward (30 min)',
    cron: '*/15 * * * *',
    from: '2026-10-03T15:10:00Z',
    to: '2026-10-03T16:10:00Z',
    // 01:45 +10:30; 02:00 and 02:15 (skipped) and 02:30 +11 are one run at the jump; 02:45 +11
    expected: [
      '2026-10-03T15:15:00Z',
      '2026-10-03T15:30:00Z',
      '2026-10-03T15:45:00Z',
      '2026-10-03T16:00:00Z',
    ],
  },
  {
    zone: 'Australia/Lord_Howe',
    change: 'fall back (30 min)',
    cron: '*/15 * * * *',
    from: '2026-04-04T14:20:00Z',
    to: '2026-04-04T15:50:00Z',
    // 01:30 and 01:45 +11, not again +10:30; then 02:00 +10:30
    expected: [
      '2026-04-04T14:30:00Z',
      '2026-04-04T14:45:00Z',
      '2026-04-04T15:30:00Z',
      '2026-04-04T15:45:00Z',
    ],
  },
  // --- America/Havana: midnight is skipped in March and repeated in November
  {
    zone: 'America/Havana',
    change: 'spring forward at midnight',
    cron: '0 0 * * *',
    from: '2026-03-06T12:00:00Z',
    to: '2026-03-09T12:00:00Z',
    expected: ['2026-03-07T05:00:00Z', '2026-03-08T05:00:00Z', '2026-03-09T04:00:00Z'],
  },
  {
    zone: 'America/Havana',
    change: 'fall back to midnight',
    cron: '0 0 * * *',
    from: '2026-10-30T12:00:00Z',
    to: '2026-11-02T12:00:00Z',
    expected: ['2026-10-31T04:00:00Z', '2026-11-01T04:00:00Z', '2026-11-02T05:00:00Z'],
  },
];

describe('scheduler across daylight-saving changes (fake timers, real zone rules)', () => {
  afterEach(() => void vi.useRealTimers());

  it.each(CASES.map((c) => [c.zone, c.change, c.cron, c]))(
    '%s, %s: "%s" runs each slot once, the skipped ones right after the jump',
    async (_zone, _change, _cron, c) => {
      const runs = await runsBetween(c.zone, c.cron, c.from, c.to);
      expect(ticks(runs)).toEqual(c.expected);
      expectPromptAndIncreasing(runs);
    },
  );

  it('the next-run gauge shows the slot the job runs at: the jump, for a slot in the skipped hour', async () => {
    vi.useFakeTimers({
      toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
      now: new Date('2026-03-28T12:00:00Z'),
    });
    const registry = new Registry();
    const s = new Scheduler({ maxStallMs: 5000, registry, logger });
    s.addJob({ name: 'backup', cron: '0 2 * * *', timezone: 'Europe/Berlin', run: async () => undefined });
    const nextRun = async () => {
      const { values } = await registry.getSingleMetric('pgmaintd_job_next_run_timestamp_seconds')!.get();
      return new Date(values[0]!.value * 1000).toISOString();
    };
    await s.start();
    try {
      expect(await nextRun()).toBe('2026-03-29T01:00:00.000Z'); // 03:00 CEST, right after the jump
      await vi.advanceTimersByTimeAsync(14 * 3_600_000); // past it
      expect(await nextRun()).toBe('2026-03-30T00:00:00.000Z'); // 02:00 CEST
    } finally {
      await s.stop();
    }
  });
});
