// The overlap guard and leader election that every scheduled job goes through.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { DbPool } from '../../src/db/pool.js';
import { createLogger } from '../../src/log/logger.js';
import { asLeader } from '../../src/schedule/leader.js';
import { Scheduler } from '../../src/schedule/scheduler.js';
import { useTestDatabase } from '../support/postgres.js';

const db = useTestDatabase();
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

describe('leader election', () => {
  it('exactly one of several contenders runs; the lock is free again afterwards', async () => {
    const pools = [0, 1, 2].map(
      () =>
        new DbPool(
          {
            url: db.url,
            ssl: { mode: 'disable', rejectUnauthorized: true },
            pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 },
          },
          { name: 'leader', logger },
        ),
    );
    try {
      let running = 0;
      const results = await Promise.all(
        pools.map((p) =>
          asLeader(p, 'backup:app', async () => {
            running++;
            await new Promise((r) => setTimeout(r, 300));
            return 'done';
          }),
        ),
      );
      expect(results.filter((r) => r.led)).toHaveLength(1);
      expect(running).toBe(1);
      const after = await asLeader(pools[1]!, 'backup:app', async () => 'again');
      expect(after).toEqual({ led: true, value: 'again' });
      // a different job name is a different lock
      const [a, b] = await Promise.all([
        asLeader(pools[0]!, 'backup:app', () => new Promise((r) => setTimeout(() => r(1), 100))),
        asLeader(pools[1]!, 'verify:app', async () => 2),
      ]);
      expect(a.led && b.led).toBe(true);
    } finally {
      for (const p of pools) await p.stop();
    }
  });
});
