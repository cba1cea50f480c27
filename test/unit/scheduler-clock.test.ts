// The scheduler under clock jumps and stalls: each cron slot runs at most once, and a slot that
// passes without a run (jumped over, or the event loop was blocked) runs once, late.
// Fake timers move the wall clock (vi.setSystemTime) without moving the monotonic clock or the
// timers' elapsed time, which is what an NTP step or a manual `date -s` does to a process.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CATCH_UP_AFTER_MS, Scheduler } from '../../src/schedule/scheduler.js';
import { createLogger } from '../../src/log/logger.js';
import { waitFor } from '../support/daemon.js';

const logger = createLogger({ level: 'silent', format: 'json' });
const HOUR = 3_600_000;
const MIN = 60_000;

function scheduler(jobs: Record<string, string>) {
  const runs: Record<string, string[]> = {};
  const s = new Scheduler({ maxStallMs: 5000, logger });
  for (const [name, cron] of Object.entries(jobs)) {
    runs[name] = [];
    s.addJob({
      name,
      cron,
      timezone: 'UTC',
      run: async (tick) => void runs[name]!.push(tick.toISOString().slice(0, 19)),
    });
  }
  return { s, runs };
}

/** Moves the wall clock only, as `date -s` does; timers keep their elapsed-time deadlines. */
function jumpClock(ms: number) {
  vi.setSystemTime(Date.now() + ms);
}

describe('scheduler under clock jumps (fake timers)', () => {
  afterEach(() => void vi.useRealTimers());

  function fake(at: string) {
    vi.useFakeTimers({
      toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
      now: new Date(at),
    });
  }

  it('a jump forward over a daily slot runs that slot once, at once; the next day runs as usual', async () => {
    fake('2026-03-01T01:00:00Z');
    const { s, runs } = scheduler({ daily: '0 2 * * *' });
    await s.start();
    try {
      jumpClock(2 * HOUR); // 01:00 -> 03:00, over the 02:00 slot
      await vi.advanceTimersByTimeAsync(CATCH_UP_AFTER_MS + 1000);
      expect(runs.daily).toEqual(['2026-03-01T02:00:00']);
      await vi.advanceTimersByTimeAsync(24 * HOUR);
      expect(runs.daily).toEqual(['2026-03-01T02:00:00', '2026-03-02T02:00:00']);
      expect(s.check().ok).toBe(true); // liveness runs on the monotonic clock
    } finally {
      await s.stop();
    }
  });

  it('a jump forward over many slots makes one catch-up run, not one per slot', async () => {
    fake('2026-03-01T10:00:30Z');
    const { s, runs } = scheduler({ minutely: '* * * * *' });
    await s.start();
    try {
      await vi.advanceTimersByTimeAsync(MIN); // 10:01 runs
      jumpClock(HOUR); // 10:01:30 -> 11:01:30: 10:02 ... 11:01 jumped over
      await vi.advanceTimersByTimeAsync(2 * MIN); // to 11:03:30
      expect(runs.minutely).toEqual([
        '2026-03-01T10:01:00',
        '2026-03-01T10:02:00', // the catch-up: one run for the 60 slots jumped over
        '2026-03-01T11:02:00',
        '2026-03-01T11:03:00',
      ]);
    } finally {
      await s.stop();
    }
  });

  it('a jump back does not run the daily slot again', async () => {
    fake('2026-03-01T01:59:30Z');
    const { s, runs } = scheduler({ daily: '0 2 * * *' });
    await s.start();
    try {
      await vi.advanceTimersByTimeAsync(MIN); // 02:00 runs; now 02:00:30
      expect(runs.daily).toEqual(['2026-03-01T02:00:00']);
      jumpClock(-HOUR); // 01:00:30: the wall clock reaches 02:00 again in an hour
      await vi.advanceTimersByTimeAsync(2 * HOUR);
      expect(runs.daily).toEqual(['2026-03-01T02:00:00']);
      await vi.advanceTimersByTimeAsync(24 * HOUR);
      expect(runs.daily).toEqual(['2026-03-01T02:00:00', '2026-03-02T02:00:00']);
      expect(s.check().ok).toBe(true);
    } finally {
      await s.stop();
    }
  });

  it('a clock that was 40 days fast, then corrected: the schedule resumes from now, not 40 days on', async () => {
    fake('2026-04-10T01:59:30Z'); // 40 days ahead of the true 2026-03-01T01:59:30Z
    const { s, runs } = scheduler({ daily: '0 2 * * *' });
    await s.start();
    try {
      await vi.advanceTimersByTimeAsync(MIN); // the 02:00 slot of the wrong day runs
      expect(runs.daily).toEqual(['2026-04-10T02:00:00']);
      jumpClock(-40 * 24 * HOUR); // NTP steps it back to 2026-03-01T02:00:30
      await vi.advanceTimersByTimeAsync(24 * HOUR);
      expect(runs.daily).toEqual(['2026-04-10T02:00:00', '2026-03-02T02:00:00']);
      expect(s.check().ok).toBe(true);
    } finally {
      await s.stop();
    }
  });

  it('after a jump back, a frequent job resumes at its first slot after the last one it ran, once per slot', async () => {
    fake('2026-03-01T10:00:30Z');
    const { s, runs } = scheduler({ minutely: '* * * * *' });
    await s.start();
    try {
      await vi.advanceTimersByTimeAsync(2 * MIN); // 10:01, 10:02 run; now 10:02:30
      jumpClock(-10 * MIN); // 09:52:30
      await vi.advanceTimersByTimeAsync(12 * MIN); // to 10:04:30
      expect(runs.minutely).toEqual([
        '2026-03-01T10:01:00',
        '2026-03-01T10:02:00',
        '2026-03-01T10:03:00',
        '2026-03-01T10:04:00',
      ]);
    } finally {
      await s.stop();
    }
  });
});

describe('scheduler when the event loop is blocked over a slot (real timers)', () => {
  it('the slot runs late, once, when the heartbeat comes round after the stall', async () => {
    // a job once a minute, at a second 3 s from now; the loop is blocked from 1 s before it to 2.5 s after
    const slot = Math.ceil((Date.now() + 3000) / 1000) * 1000;
    const { s, runs } = scheduler({ minutely: `${new Date(slot).getUTCSeconds()} * * * * *` });
    await s.start();
    try {
      await new Promise((r) => setTimeout(r, slot - 1000 - Date.now()));
      while (Date.now() < slot + 2500); // a synchronous stall: GC, a huge JSON.parse, ...
      // late, when a heartbeat comes round (later still on a busy machine) ...
      await waitFor(
        async () => runs.minutely!.length,
        (n) => n > 0,
        30_000,
        50,
      );
      // ... and once: a second run would come with the next heartbeat
      await new Promise((r) => setTimeout(r, CATCH_UP_AFTER_MS + 1000));
      expect(runs.minutely).toEqual([new Date(slot).toISOString().slice(0, 19)]);
    } finally {
      await s.stop();
    }
  });
});
