/**
 * What active sessions wait on, sampled several times per METRICS_INTERVAL so that short waits show:
 * one sample of pg_stat_activity sees a wait only if it is under way at that instant, so a poll every
 * 15 s misses the 50 ms lock waits and I/O stalls that add up to a slow minute. The collector polls on
 * an interval of its own, a fifth of METRICS_INTERVAL (at least 1 s), each poll one cheap read of
 * pg_stat_activity (no locks, shared memory only), and exports over the samples of the last
 * METRICS_INTERVAL, by {wait_event_type, wait_event}:
 * - pgmaintd_wait_event_sessions: sessions waiting, on average over the samples (the "average active
 *   sessions" of a wait: 0.4 means 40 % of the samples saw one session in it);
 * - pgmaintd_wait_event_sessions_max: the most seen in one sample.
 * Only active sessions count (an idle session waits on ClientRead by definition), not pg-maintd's own,
 * and not the background processes' idle waits (type Activity). PostgreSQL's wait events are a fixed
 * list (extensions may add a few), and at most WAIT_EVENTS_LIMIT pairs are kept, the busiest, so the
 * series stay bounded.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

export const SAMPLES_PER_INTERVAL = 5;
const WAIT_EVENTS_LIMIT = 100;

const SQL = `
  SELECT wait_event_type, wait_event, count(*)::int AS n
    FROM pg_stat_activity
   WHERE state = 'active' AND wait_event IS NOT NULL AND wait_event_type <> 'Activity'
     AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM 'pg-maintd'
   GROUP BY 1, 2`;

type Label = 'wait_event_type' | 'wait_event';
interface Sample {
  at: number;
  counts: Map<string, number>;
}

export class WaitEventsCollector implements Collector {
  readonly name = 'wait_events';
  readonly #avg: CachedFamily<Label>;
  readonly #max: CachedFamily<Label>;
  #samples: Sample[] = [];

  /** windowMs: the span the samples cover, METRICS_INTERVAL. */
  constructor(
    registry: Registry,
    private readonly opts: { windowMs: number; intervalMs?: number },
  ) {
    this.#avg = new CachedFamily(registry, {
      name: 'pgmaintd_wait_event_sessions',
      help: 'Active sessions waiting on this wait event, averaged over the samples of the last metrics interval (several per interval, so short waits show).',
      type: 'gauge',
      labelNames: ['wait_event_type', 'wait_event'],
    });
    this.#max = new CachedFamily(registry, {
      name: 'pgmaintd_wait_event_sessions_max',
      help: 'The most active sessions seen waiting on this wait event in one sample of the last metrics interval.',
      type: 'gauge',
      labelNames: ['wait_event_type', 'wait_event'],
    });
  }

  get intervalMs(): number {
    return this.opts.intervalMs ?? Math.max(1000, Math.floor(this.opts.windowMs / SAMPLES_PER_INTERVAL));
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const rows = (await client.query<{ wait_event_type: string; wait_event: string; n: number }>(SQL)).rows;
    const now = performance.now();
    const counts = new Map<string, number>();
    for (const r of rows) counts.set(JSON.stringify([r.wait_event_type, r.wait_event]), r.n);
    // a little slack so that exactly SAMPLES_PER_INTERVAL samples fit however the timers drift
    const since = now - this.opts.windowMs - this.intervalMs / 2;
    this.#samples = [...this.#samples.filter((s) => s.at > since), { at: now, counts }];
    this.#publish();
  }

  clear(): void {
    // samples that a failed poll interrupts would describe a window with a hole: start again
    this.#samples = [];
    this.#avg.clear();
    this.#max.clear();
  }

  #publish(): void {
    const sum = new Map<string, number>();
    const max = new Map<string, number>();
    for (const s of this.#samples)
      for (const [k, n] of s.counts) {
        sum.set(k, (sum.get(k) ?? 0) + n);
        max.set(k, Math.max(max.get(k) ?? 0, n));
      }
    const busiest = [...sum]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, WAIT_EVENTS_LIMIT)
      .sort((a, b) => (a[0] < b[0] ? -1 : 1));
    const labels = (k: string) => {
      const [wait_event_type, wait_event] = JSON.parse(k) as [string, string];
      return { wait_event_type, wait_event };
    };
    this.#avg.replace(busiest.map(([k, n]) => ({ labels: labels(k), value: n / this.#samples.length })));
    this.#max.replace(busiest.map(([k]) => ({ labels: labels(k), value: max.get(k)! })));
  }
}
