// The metrics poller against a real server: cached series, pg_up, collector health, and what happens
// to the series when the database goes away and comes back.
import { Writable } from 'node:stream';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { ActivityCollector } from '../../src/metrics/collectors/activity.js';
import { DatabaseCollector } from '../../src/metrics/collectors/database.js';
import { LocksCollector } from '../../src/metrics/collectors/locks.js';
import { SettingsCollector } from '../../src/metrics/collectors/settings.js';
import { PostmasterCollector, shortVersion } from '../../src/metrics/collectors/postmaster.js';
import { CachedFamily } from '../../src/metrics/family.js';
import type { Collector } from '../../src/metrics/collector.js';
import { Poller } from '../../src/metrics/poller.js';
import { metricValue } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';

const logger = createLogger({ level: 'silent', format: 'json' });
let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await startPrivateCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

function makePoller(
  intervalMs = 60_000,
  more: Pick<ConstructorParameters<typeof Poller>[0], 'intervals'> & {
    collectors?: (r: Registry) => Collector[];
    url?: string;
    logger?: Logger;
  } = {},
) {
  const registry = new Registry();
  const poller = new Poller({
    db: {
      url: more.url ?? cluster.url(),
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 2000 },
    },
    registry,
    logger: more.logger ?? logger,
    collectors: more.collectors?.(registry) ?? [new PostmasterCollector(registry)],
    intervalMs,
    ...(more.intervals ? { intervals: more.intervals } : {}),
    statementTimeoutMs: 2000,
    lockTimeoutMs: 500,
  });
  return { registry, poller };
}

describe('metrics poller', () => {
  it('polls into cached series: pg_up, pg_static, postmaster start, collector health', async () => {
    const { registry, poller } = makePoller();
    try {
      await poller.pollAll();
      const text = await registry.metrics();
      expect(text).toMatch(/^pg_up 1$/m);
      expect(text).toMatch(/^pg_static\{version="PostgreSQL 15\.\d+[^"]*",short_version="15\.\d+\.0"\} 1$/m);
      const started = await metricValue(registry, 'pg_postmaster_start_time_seconds', {});
      expect(started).toBeGreaterThan(Date.now() / 1000 - 3600);
      expect(started).toBeLessThanOrEqual(Date.now() / 1000);
      expect(await metricValue(registry, 'pg_scrape_collector_success', { collector: 'postmaster' })).toBe(1);
      expect(
        await metricValue(registry, 'pg_scrape_collector_duration_seconds', { collector: 'postmaster' }),
      ).toBeGreaterThan(0);
      expect(
        await metricValue(registry, 'pgmaintd_collector_last_success_timestamp_seconds', {
          collector: 'postmaster',
        }),
      ).toBeGreaterThan(Date.now() / 1000 - 60);
      expect(text).toMatch(/^pg_exporter_last_scrape_error 0$/m);
      // the poll runs as pg-maintd, with the configured timeouts
      const c = await poller.pool.connect();
      try {
        const r = await c.query<{ app: string; st: string; lt: string }>(
          "SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st, current_setting('lock_timeout') AS lt",
        );
        expect(r.rows[0]).toEqual({ app: 'pg-maintd', st: '2s', lt: '500ms' });
      } finally {
        c.release();
      }
    } finally {
      await poller.stop();
    }
  });

  it('drops the series of a failing collector and says pg_up 0 while the database is down; recovers without a restart', async () => {
    const { registry, poller } = makePoller(200);
    await poller.start();
    try {
      await waitFor(
        () => metricValue(registry, 'pg_up', {}),
        (v) => v === 1,
        10_000,
        50,
      );
      await cluster.stopServer();
      const down = await waitFor(
        () => registry.metrics(),
        (t) => /^pg_up 0$/m.test(t),
        10_000,
        50,
      );
      expect(down).toMatch(/^pg_scrape_collector_success\{collector="postmaster"\} 0$/m);
      expect(down).not.toMatch(/^pg_static\{/m); // never served stale
      expect(down).not.toMatch(/^pg_postmaster_start_time_seconds \d/m);
      expect(down).toMatch(/^pg_exporter_last_scrape_error 1$/m);
      // a scrape reads the cache only: it answers, and answers the same, while the database is down
      const t0 = performance.now();
      for (let i = 0; i < 50; i++) await registry.metrics();
      expect((performance.now() - t0) / 50).toBeLessThan(50);

      await cluster.startServer();
      const up = await waitFor(
        () => registry.metrics(),
        (t) => /^pg_up 1$/m.test(t) && /^pg_static\{/m.test(t),
        15_000,
        50,
      );
      expect(up).toMatch(/^pg_scrape_collector_success\{collector="postmaster"\} 1$/m);
      expect(up).toMatch(/^pg_exporter_last_scrape_error 0$/m);
    } finally {
      await poller.stop();
    }
  });
});

describe('pg_up between polls', () => {
  it('follows the readiness probe’s connection attempts, and a database that is back is polled at once', async () => {
    const { registry, poller } = makePoller(600_000); // no poll of its own during the test
    await poller.start();
    try {
      await waitFor(
        () => metricValue(registry, 'pg_static', {}),
        (v) => v === 1,
        10_000,
        50,
      );
      await cluster.stopServer();
      poller.reportConnection(false); // the probe's SELECT 1 failed
      expect(await metricValue(registry, 'pg_up', {})).toBe(0);
      // the collectors poll at once, fail, and drop their series: nothing is served as fresh
      await waitFor(
        () => metricValue(registry, 'pg_scrape_collector_success', { collector: 'postmaster' }),
        (v) => v === 0,
        5000,
        50,
      );
      expect(await metricValue(registry, 'pg_static', {})).toBeUndefined();
      await cluster.startServer();
      poller.reportConnection(true);
      expect(await metricValue(registry, 'pg_up', {})).toBe(1);
      // back well before the 10-minute interval
      const back = await waitFor(
        () => metricValue(registry, 'pg_static', {}),
        (v) => v === 1,
        15_000,
        50,
      );
      expect(back).toBe(1);
      expect(await metricValue(registry, 'pg_scrape_collector_success', { collector: 'postmaster' })).toBe(1);
    } finally {
      await poller.stop();
    }
  });
});

describe('a collector that finds the database gone or back', () => {
  it('makes the others poll at once, rather than serve their last poll until their next one', async () => {
    // stat_activity polls every 10 minutes; postmaster every 200 ms, so its connection attempts are
    // the ones that find the outage and the recovery (no readiness probe here)
    const { registry, poller } = makePoller(600_000, {
      collectors: (r) => [new PostmasterCollector(r), new ActivityCollector(r)],
      intervals: { postmaster: 200 },
    });
    const activity = () =>
      metricValue(registry, 'pg_scrape_collector_success', { collector: 'stat_activity' });
    await poller.start();
    try {
      await waitFor(activity, (v) => v === 1, 10_000, 50);
      await cluster.stopServer();
      await waitFor(
        () => metricValue(registry, 'pg_up', {}),
        (v) => v === 0,
        10_000,
        50,
      );
      await waitFor(activity, (v) => v === 0, 5000, 50);
      expect(await metricValue(registry, 'pg_stat_activity_count', {})).toBeUndefined();

      await cluster.startServer();
      await waitFor(activity, (v) => v === 1, 10_000, 50);
      expect(await metricValue(registry, 'pg_stat_activity_count', {})).toBeGreaterThanOrEqual(0);
    } finally {
      await poller.stop();
    }
  });
});

describe('near a connection limit', () => {
  it('pg_up flipping at every attempt does not set off a storm of early polls', async () => {
    // a role that may hold 2 sessions, one of them taken: the poller's pool reuses its one session
    // for some polls while the others are refused (53300), so pg_up flips 1, 0, 1, 0 as they finish
    const admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    await admin.query(`CREATE ROLE capped LOGIN PASSWORD 'capped' CONNECTION LIMIT 2`);
    await admin.query(`GRANT pg_monitor TO capped`);
    const url = new URL(cluster.url());
    url.username = 'capped';
    url.password = 'capped';
    const holder = new pg.Client({ connectionString: url.toString() });
    await holder.connect();
    const lines: string[] = [];
    const captured = createLogger({
      level: 'info',
      format: 'json',
      destination: new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(...chunk.toString().split('\n').filter(Boolean));
          done();
        },
      }),
    });
    const { poller } = makePoller(600_000, {
      url: url.toString(),
      logger: captured,
      collectors: (r) => [
        new PostmasterCollector(r),
        new ActivityCollector(r),
        new SettingsCollector(r),
        new DatabaseCollector(r),
        new LocksCollector(r, { logWaitsOverSeconds: 60 }),
      ],
    });
    const turns = () => lines.filter((l) => /"collector (failed|recovered)/.test(l)).length;
    await poller.start();
    try {
      // the first round meets the limit: some collectors fail
      await waitFor(
        async () => turns(),
        (n) => n > 0,
        10_000,
        50,
      );
      const started = Date.now();
      await new Promise((r) => setTimeout(r, 4000)); // a window to count in, not a wait for a state
      const seconds = (Date.now() - started) / 1000;
      // each collector may turn twice (fail, recover) in each round of early polls, one round per
      // 5 s at most (two rounds fit in this window, the first one at once); without that bound the
      // turns run to hundreds a second
      const bound = 5 * 2 * (Math.ceil(seconds / 5) + 1);
      expect(turns(), `${turns()} turns in ${seconds} s`).toBeLessThanOrEqual(bound + 5);
    } finally {
      await poller.stop();
      await holder.end();
      await admin.query(`DROP ROLE capped`).catch(() => undefined);
      await admin.end();
    }
  });
});

describe('cached families', () => {
  it('serves absolute counter values from the database, drops series on clear, skips non-numbers', async () => {
    const registry = new Registry();
    const calls = new CachedFamily(registry, {
      name: 't_calls_total',
      help: 'h',
      type: 'counter',
      labelNames: ['q'] as const,
    });
    calls.replace([
      { labels: { q: 'a' }, value: 10 },
      { labels: { q: 'b' }, value: Number.NaN },
    ]);
    expect(await registry.metrics()).toMatch(/^t_calls_total\{q="a"\} 10$/m);
    calls.replace([{ labels: { q: 'a' }, value: 12 }]);
    const text = await registry.metrics();
    expect(text).toMatch(/^t_calls_total\{q="a"\} 12$/m);
    expect(text).not.toMatch(/q="b"/);
    calls.clear();
    expect(await registry.metrics()).not.toMatch(/^t_calls_total\{/m);
  });

  it('short_version is major.minor.patch', () => {
    expect(shortVersion('15.18 (Debian 15.18-0+deb12u1)')).toBe('15.18.0');
    expect(shortVersion('17.2')).toBe('17.2.0');
    expect(shortVersion('18beta1')).toBe('18.0.0');
  });
});
