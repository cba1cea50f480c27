// The overlap guard every scheduled job goes through (leader election: lease.test.ts).
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { Scheduler } from '../../src/schedule/scheduler.js';
import { waitFor } from '../support/daemon.js';

const logger = createLogger({ level: 'silent', format: 'json' });

async function skipped(registry: Registry, job: string, reason: string): Promise<number | undefined> {
  const { values } = await registry.getSingleMetric('pgmaintd_job_skipped_total')!.get();
  return values.find((v) => v.labels.job === job && v.labels.reason === reason)?.value;
}

describe('scheduler', () => {
  it('never overlaps runs of one job: a tick during a run is skipped and counted', async () => {
    const registry = new Registry();
    const s = new Scheduler({ maxStallMs: 5000, registry, logger });
    let runs = 0;
    let release!: () => void;
    s.addJob({
      name: 'slow',
      cron: '0 0 1 1 *',
      timezone: 'UTC',
      run: () => {
        runs++;
        return new Promise<void>((r) => (release = r));
      },
    });
    await s.start();
    try {
      const first = s.trigger('slow');
      await s.trigger('slow');
      await s.trigger('slow');
      expect(runs).toBe(1);
      expect(await skipped(registry, 'slow', 'overlap')).toBe(2);
      release();
      await first;
      const again = s.trigger('slow');
      release();
      await again;
      expect(runs).toBe(2);
    } finally {
      await s.stop();
    }
  });

  it("counts a part's skip when it happens: before the run's other parts end, and when a later part throws", async () => {
    const registry = new Registry();
    const s = new Scheduler({ maxStallMs: 5000, registry, logger });
    let release!: () => void;
    const secondPart = new Promise<void>((r) => (release = r));
    s.addJob({
      name: 'parts',
      cron: '0 0 1 1 *',
      timezone: 'UTC',
      async *run() {
        yield { kind: 'skipped', reason: 'not_leader' } as const; // database A: another replica has it
        await secondPart; // database B: a long backup
        yield { kind: 'ran' } as const;
        throw new Error('database C: something unexpected');
      },
    });
    await s.start();
    try {
      const run = s.trigger('parts');
      await waitFor(
        () => skipped(registry, 'parts', 'not_leader'),
        (v) => v === 1,
        5000,
        10,
      );
      release();
      await run; // the throw is logged as a failed job, not lost with the skip
      expect(await skipped(registry, 'parts', 'not_leader')).toBe(1);
    } finally {
      await s.stop();
    }
  });

  it('stop() aborts the run in flight and waits for it', async () => {
    const s = new Scheduler({ maxStallMs: 5000, logger });
    let aborted = false;
    s.addJob({
      name: 'long',
      cron: '0 0 1 1 *',
      timezone: 'UTC',
      run: (_tick, signal) =>
        new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => {
            aborted = true;
            setTimeout(resolve, 50);
          });
        }),
    });
    await s.start();
    void s.trigger('long');
    await s.stop();
    expect(aborted).toBe(true);
    expect(s.check()).toEqual({ ok: false, detail: 'scheduler stopped' });
  });

  it('publishes when each job runs next, and leaves out jobs that are off', async () => {
    const registry = new Registry();
    const s = new Scheduler({ maxStallMs: 5000, registry, logger });
    s.addJob({ name: 'nightly', cron: '0 2 * * *', timezone: 'UTC', run: async () => undefined });
    s.addJob({ name: 'never', cron: 'off', timezone: 'UTC', run: async () => undefined });
    await s.start();
    try {
      const { values } = await registry.getSingleMetric('pgmaintd_job_next_run_timestamp_seconds')!.get();
      expect(values.map((v) => v.labels.job)).toEqual(['nightly']);
      const next = new Date(values[0]!.value * 1000);
      expect(next.getUTCHours()).toBe(2);
      expect(next.getUTCMinutes()).toBe(0);
      expect(next.getTime()).toBeGreaterThan(Date.now());
    } finally {
      await s.stop();
    }
  });
});
