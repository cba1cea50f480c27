// The metrics poller's connections against a real server of 60 databases (max_connections 100): with
// METRICS_DATABASES='*' they never exceed METRICS_MAX_CONNECTIONS (plus the readiness probe's one),
// every database's table statistics still arrive within two poll intervals, and near the server's
// connection limit the poller polls with fewer. Once in-process (the poller and the readiness probe as
// the daemon builds them, for exact timing), once as the daemon itself.
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { DbPool } from '../../src/db/pool.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { ReadinessProbe } from '../../src/health/readiness.js';
import { createLogger } from '../../src/log/logger.js';
import type { Collector, CollectorContext } from '../../src/metrics/collector.js';
import { Poller } from '../../src/metrics/poller.js';
import { pollerFor } from '../../src/metrics/poller-for.js';
import { budgetFor, marginOf, readCapacity } from '../../src/metrics/server-capacity.js';
import { metricValue } from '../support/backup.js';
import { cliEnv, scrapeMetrics, startDaemon, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const DATABASES = 60;
const names = Array.from({ length: DATABASES }, (_, i) => `app_${String(i).padStart(2, '0')}`);
/** METRICS_INTERVAL's default: a round of 60 databases takes seconds on a loaded machine. */
const INTERVAL_MS = 15_000;
const BUDGET = 3;

let cluster: LocalCluster;
let admin: pg.Client;

beforeAll(async () => {
  cluster = await startPrivateCluster({ settings: { max_connections: 100 } });
  admin = new pg.Client({ connectionString: cluster.url('postgres'), application_name: 'test-admin' });
  await admin.connect();
  for (const name of names) {
    await admin.query(`CREATE DATABASE ${name}`);
    const c = new pg.Client({ connectionString: cluster.url(name) });
    await c.connect();
    await c.query(`CREATE TABLE orders_${name} (id int); INSERT INTO orders_${name} VALUES (1)`);
    await c.end();
  }
}, 240_000);

afterAll(async () => {
  await admin?.end();
  await cluster?.stop();
});

/** What the daemon builds: the poller from the configuration, the readiness probe on its own pool. */
function agent(max = BUDGET) {
  const { config } = loadConfig({
    defaultsDir: tempDir('cfg-none-'),
    env: {
      DATABASE_URL: cluster.url('postgres'),
      DB_SSL_MODE: 'disable',
      METRICS_DATABASES: '*',
      METRICS_INTERVAL: `${INTERVAL_MS / 1000}s`,
      METRICS_MAX_CONNECTIONS: String(max),
    },
  });
  const stream = new PassThrough();
  const lines: Array<Record<string, unknown>> = [];
  stream.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
  });
  const logger = createLogger({ level: 'info', format: 'json', destination: stream });
  const registry = new Registry();
  const poller = pollerFor(config, registry, logger);
  const readyPool = new DbPool(config.db, { name: 'readyz', logger, max: 1, min: 0 });
  const readiness = new ReadinessProbe(readyPool, {
    intervalMs: 1000,
    timeoutMs: 2000,
    logger,
    onResult: (ok) => poller.reportConnection(ok),
  });
  return {
    registry,
    poller,
    lines,
    async start() {
      await poller.start();
      await readiness.start();
    },
    async stop() {
      await readiness.stop();
      await readyPool.stop();
      await poller.stop();
    },
  };
}

/**
 * pg-maintd's sessions as the server sees them, sampled on a connection of its own as fast as the
 * server answers: the most seen at once.
 */
function sampler() {
  const client = new pg.Client({
    connectionString: cluster.url('postgres'),
    application_name: 'test-sampler',
  });
  let max = 0;
  let maxAll = 0;
  let samples = 0;
  let running = true;
  const done = (async () => {
    await client.connect();
    while (running) {
      // 'pg-maintd': what stays; 'pg-maintd-pooler-probe': the daemon's one-off look at start-up
      const r = await client.query<{ n: number; all: number }>(
        `SELECT count(*) FILTER (WHERE application_name = 'pg-maintd')::int AS n,
                count(*) FILTER (WHERE application_name LIKE 'pg-maintd%')::int AS all
           FROM pg_stat_activity`,
      );
      max = Math.max(max, r.rows[0]!.n);
      maxAll = Math.max(maxAll, r.rows[0]!.all);
      samples++;
      await new Promise((r) => setImmediate(r));
    }
    await client.end();
  })();
  return {
    get max() {
      return max;
    },
    get maxAll() {
      return maxAll;
    },
    get samples() {
      return samples;
    },
    async stop() {
      running = false;
      await done;
    },
  };
}

/** The databases whose table statistics the registry holds now. */
async function covered(registry: Registry): Promise<Set<string>> {
  return coveredIn(await registry.metrics());
}

function coveredIn(text: string): Set<string> {
  const seen = new Set<string>();
  for (const m of text.matchAll(/^pg_stat_user_tables_n_live_tup\{[^}]*datname="(app_\d\d)"/gm))
    seen.add(m[1]!);
  return seen;
}

/** When each database's table statistics first arrived, in ms after `t0`, watched until all have. */
async function arrivals(registry: Registry, t0: number, timeoutMs: number): Promise<Map<string, number>> {
  const at = new Map<string, number>();
  await waitFor(
    async () => {
      const now = performance.now() - t0;
      for (const d of await covered(registry)) if (!at.has(d)) at.set(d, now);
      return at.size;
    },
    (n) => n === DATABASES,
    timeoutMs,
    50,
  );
  return at;
}

describe('metrics connections under one budget', () => {
  it(`with 60 databases, never more than METRICS_MAX_CONNECTIONS ${BUDGET} connections (+1 readiness), every database within two poll intervals`, async () => {
    const a = agent();
    const s = sampler();
    await waitFor(
      async () => s.samples,
      (n) => n > 0,
    );
    const t0 = performance.now();
    await a.start();
    try {
      const at = await arrivals(a.registry, t0, 6 * INTERVAL_MS);
      // a per-database round starts every interval (the first at start) and starts no database once its
      // interval is up: "within two poll intervals" is "in the first or the second round"
      const rounds = [...at.values()].map((ms) => Math.floor(ms / INTERVAL_MS) + 1);
      const last = Math.max(...at.values());
      console.log(
        `60 databases covered ${Math.round(last)} ms after start (round ${Math.max(...rounds)}; interval ${INTERVAL_MS} ms)`,
      );
      expect(Math.max(...rounds)).toBeLessThanOrEqual(2);
      expect(last).toBeLessThan(2 * INTERVAL_MS);
      // two more rounds, to see the connections over the steady state too
      const lastSuccess = () =>
        metricValue(a.registry, 'pgmaintd_collector_last_success_timestamp_seconds', {
          collector: 'stat_user_tables',
        });
      // the round that covered them all ends once its last polls are in
      const first = (await waitFor(lastSuccess, (v) => v !== undefined, INTERVAL_MS, 100))!;
      await waitFor(
        lastSuccess,
        (v) => v !== undefined && v >= first + INTERVAL_MS / 1000 - 1,
        3 * INTERVAL_MS,
        200,
      );
      expect(await covered(a.registry)).toHaveProperty('size', DATABASES);
      expect(await metricValue(a.registry, 'pgmaintd_metrics_connections_budget', {})).toBe(BUDGET);
      expect(
        await metricValue(a.registry, 'pgmaintd_metrics_databases_unreached', {
          collector: 'stat_user_tables',
        }),
      ).toBe(0);
      expect(
        await metricValue(a.registry, 'pg_scrape_collector_success', { collector: 'stat_user_tables' }),
      ).toBe(1);
    } finally {
      await a.stop();
      await s.stop();
    }
    console.log(`most pg-maintd connections seen at once: ${s.max} (${s.samples} samples)`);
    expect(s.samples).toBeGreaterThan(100);
    expect(s.max).toBeLessThanOrEqual(BUDGET + 1);
    expect(s.max).toBeGreaterThanOrEqual(2); // the sampler saw the poller at work
  }, 180_000);

  it('near the server’s connection limit, polls with fewer connections (down to one), says so, and takes them back once there is room', async () => {
    const slots = 100 - 3; // max_connections - superuser_reserved_connections
    const s = sampler();
    const holders: pg.Client[] = [];
    try {
      await waitFor(
        async () => s.samples,
        (n) => n > 0,
      );
      // leave the poller less than the margin: everybody else (the admin, the sampler, the readiness
      // probe to come, the holders) takes all but margin - 1 of the slots
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend'",
      );
      const others = slots - marginOf(slots) + 1;
      while (rows[0]!.n + 1 + holders.length < others) {
        const c = new pg.Client({
          connectionString: cluster.url('postgres'),
          application_name: 'test-holder',
        });
        await c.connect();
        holders.push(c);
      }
      expect(budgetFor(BUDGET, { slots, used: others }, 0)).toBe(1);
      const a = agent();
      await a.start();
      try {
        // a round with one connection takes longer: coverage, not its time, is the point here
        const at = await arrivals(a.registry, performance.now(), 8 * INTERVAL_MS);
        expect(await metricValue(a.registry, 'pgmaintd_metrics_connections_budget', {})).toBe(1);
        expect(s.max).toBeLessThanOrEqual(1 + 1);
        const said = a.lines.find((l) => String(l.msg).includes('near its connection limit'));
        expect(said).toMatchObject({ level: 40, budget: 1, max: BUDGET, slots });
        console.log(
          `near the limit: budget 1, 60 databases covered ${Math.round(Math.max(...at.values()))} ms after start, most pg-maintd connections seen at once ${s.max}`,
        );

        await Promise.all(holders.splice(0).map((c) => c.end()));
        // the free slots are looked at again within an interval
        await waitFor(
          () => metricValue(a.registry, 'pgmaintd_metrics_connections_budget', {}),
          (v) => v === BUDGET,
          3 * INTERVAL_MS,
          200,
        );
        expect(a.lines.some((l) => String(l.msg).includes('has room again'))).toBe(true);
      } finally {
        await a.stop();
      }
    } finally {
      await Promise.all(holders.map((c) => c.end()));
      await s.stop();
    }
  }, 240_000);

  it('a role without pg_read_all_stats counts the other roles’ connections too', async () => {
    await admin.query(`CREATE ROLE watcher LOGIN PASSWORD '${cluster.password}'`);
    const watcher = new pg.Client({ connectionString: cluster.url('postgres', 'watcher') });
    await watcher.connect();
    try {
      const seen = await readCapacity(watcher);
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend'",
      );
      expect(seen.slots).toBe(97);
      // hidden sessions count whatever they are (an autovacuum worker may be among them): never fewer
      expect(seen.used).toBeGreaterThanOrEqual(rows[0]!.n);
      expect(seen.used).toBeLessThanOrEqual(rows[0]!.n + 3);
    } finally {
      await watcher.end();
    }
  });

  it('the daemon itself: every pool of pg-maintd together within METRICS_MAX_CONNECTIONS + the readiness probe', async () => {
    const s = sampler();
    await waitFor(
      async () => s.samples,
      (n) => n > 0,
    );
    const t0 = performance.now();
    const d = await startDaemon(
      cliEnv(cluster.url('postgres'), tempDir('metrics-conns-'), {
        METRICS_DATABASES: '*',
        METRICS_INTERVAL: `${INTERVAL_MS / 1000}s`,
        MIGRATE_ON_START: 'false',
      }),
    );
    let text = '';
    try {
      // from the spawn (Node's start-up included): generous, and still the rule
      const coveredAt = await waitFor(
        async () => {
          text = await scrapeMetrics(d);
          return { n: coveredIn(text).size, ms: performance.now() - t0 };
        },
        (v) => v.n === DATABASES,
        2 * INTERVAL_MS,
        250,
      );
      // one more round, to see the steady state too
      const first = await waitFor(
        async () =>
          /^pg_scrape_collector_success\{collector="stat_user_tables"\} 1$/m.test(await scrapeMetrics(d)),
        (ok) => ok,
      );
      expect(first).toBe(true);
      await waitFor(
        async () => performance.now() - t0,
        (ms) => ms > coveredAt.ms + INTERVAL_MS + 1000,
        2 * INTERVAL_MS,
        500,
      );
      text = await scrapeMetrics(d);
      expect(coveredIn(text).size).toBe(DATABASES);
      expect(text).toMatch(new RegExp(`^pgmaintd_metrics_connections_budget ${BUDGET}$`, 'm'));
      console.log(
        `daemon: 60 databases on /metrics ${Math.round(coveredAt.ms)} ms after the spawn; most pg-maintd connections seen at once ${s.max}, with the start-up pooler probe ${s.maxAll} (${s.samples} samples)`,
      );
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
      await s.stop();
    }
    expect(s.max).toBeLessThanOrEqual(BUDGET + 1);
    expect(s.maxAll).toBeLessThanOrEqual(BUDGET + 1 + 2);
  }, 180_000);

  /** A per-database collector that does what `poll` says in each database, and counts the polls. */
  function probeCollector(poll: (ctx: CollectorContext) => Promise<void>) {
    const polls = new Map<string, number>();
    const c: Collector = {
      name: 'stat_user_tables',
      scope: 'database',
      async collect(ctx) {
        polls.set(ctx.database, (polls.get(ctx.database) ?? 0) + 1);
        await poll(ctx);
      },
      clear() {},
    };
    return { c, polls };
  }

  function probePoller(
    c: Collector,
    intervalMs: number,
    logger = createLogger({ level: 'silent', format: 'json' }),
  ) {
    const registry = new Registry();
    const poller = new Poller({
      db: {
        url: cluster.url('postgres'),
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 10_000 },
      },
      registry,
      logger,
      collectors: [c],
      intervalMs,
      statementTimeoutMs: 30_000,
      lockTimeoutMs: 1000,
      databases: '*',
      maxConnections: BUDGET,
    });
    return { registry, poller };
  }

  it('a database that hangs holds one connection; the others are polled meanwhile', async () => {
    let release!: () => void;
    const stuck = new Promise<void>((r) => (release = r));
    const { c, polls } = probeCollector(async ({ database, client }) => {
      if (database === 'app_00')
        await stuck; // first in the round, and it hangs
      else await client.query('SELECT 1');
    });
    const { poller } = probePoller(c, 600_000);
    const round = poller.pollAll();
    try {
      // every other database (60, 'postgres' included) while app_00 still hangs
      await waitFor(
        async () => [...polls.keys()].filter((d) => d !== 'app_00').length,
        (n) => n === DATABASES,
        120_000,
        100,
      );
      expect(polls.get('app_00')).toBe(1);
    } finally {
      release();
      await round;
      await poller.closeConnections();
    }
  }, 180_000);

  it('rounds cut short by their interval take the databases in turn: none is polled twice before all are polled once', async () => {
    const stream = new PassThrough();
    const said: string[] = [];
    stream.on('data', (d: Buffer) => said.push(d.toString()));
    const { c, polls } = probeCollector(async ({ client }) => {
      await client.query('SELECT pg_sleep(0.2)');
    });
    // 61 databases at 0.2 s each over 3 connections: several 1 s rounds for one pass
    const { registry, poller } = probePoller(
      c,
      1000,
      createLogger({ level: 'info', format: 'json', destination: stream }),
    );
    await poller.start();
    let maxUnreached = 0;
    try {
      await waitFor(
        async () => {
          const u = await metricValue(registry, 'pgmaintd_metrics_databases_unreached', {
            collector: 'stat_user_tables',
          });
          maxUnreached = Math.max(maxUnreached, u ?? 0);
          return Math.min(...[...polls.values()], polls.size < DATABASES + 1 ? 0 : Infinity);
        },
        (fewest) => fewest >= 2, // two passes over every database
        120_000,
        100,
      );
    } finally {
      await poller.stop();
    }
    const counts = [...polls.values()];
    console.log(
      `rotation: polls per database from ${Math.min(...counts)} to ${Math.max(...counts)}; most unreached in a round ${maxUnreached}`,
    );
    expect(polls.size).toBe(DATABASES + 1);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    expect(maxUnreached).toBeGreaterThan(0);
    expect(said.join('')).toContain('did not reach every database within its interval');
  }, 180_000);
});
