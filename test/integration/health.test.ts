// Liveness and readiness, in-process: a wedged event loop or a stalled scheduler makes /healthz 503.
import { afterEach, describe, expect, it } from 'vitest';
import { DbPool } from '../../src/db/pool.js';
import { ReadinessProbe } from '../../src/health/readiness.js';
import { EventLoopWatchdog } from '../../src/health/watchdog.js';
import { HttpServer } from '../../src/http/server.js';
import { Lifecycle } from '../../src/lifecycle/lifecycle.js';
import { createLogger } from '../../src/log/logger.js';
import { createRegistry } from '../../src/metrics/registry.js';
import { Scheduler } from '../../src/schedule/scheduler.js';
import { getJson, waitFor } from '../support/daemon.js';
import { useTestDatabase } from '../support/postgres.js';

const db = useTestDatabase();
const logger = createLogger({ level: 'silent', format: 'json' });
let lifecycle: Lifecycle | undefined;

afterEach(async () => {
  await lifecycle?.stopAll();
  lifecycle = undefined;
});

async function serve(maxLagMs: number) {
  lifecycle = new Lifecycle(logger);
  const pool = await lifecycle.start(
    new DbPool(
      {
        url: db.url,
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 1000 },
      },
      { name: 'readyz', logger },
    ),
  );
  const watchdog = await lifecycle.start(new EventLoopWatchdog({ maxLagMs, intervalMs: 20 }));
  const scheduler = await lifecycle.start(new Scheduler({ maxStallMs: maxLagMs, tickMs: 20 }));
  const readiness = await lifecycle.start(
    new ReadinessProbe(pool, { intervalMs: 100, timeoutMs: 500, logger }),
  );
  const http = await lifecycle.start(
    new HttpServer({
      host: '127.0.0.1',
      port: 0,
      registry: createRegistry(),
      logger,
      liveness: { eventLoop: () => watchdog.check(), scheduler: () => scheduler.check() },
      readiness: () => readiness.state(),
    }),
  );
  return { base: `http://127.0.0.1:${http.address.port}`, scheduler, readiness };
}

function blockEventLoop(ms: number) {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // a synchronous hog, as a runaway computation would be
  }
}

describe('health endpoints', () => {
  it('answer 200 when the loop, the scheduler and the database are fine', async () => {
    const { base } = await serve(300);
    const h = await getJson(`${base}/healthz`);
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({
      status: 'ok',
      checks: { eventLoop: { ok: true }, scheduler: { ok: true } },
    });
    // The first check runs in the background after start: not ready until it has succeeded.
    const r = await waitFor(
      () => getJson(`${base}/readyz`),
      (x) => x.status === 200,
      5000,
      20,
    );
    expect(r.body).toMatchObject({ status: 'ready', ready: true });
  });

  it('/healthz answers 503 after the event loop was wedged, and 200 once it recovers', async () => {
    const { base } = await serve(300);
    const pending = fetch(`${base}/healthz`); // queued while the loop is blocked
    blockEventLoop(800);
    const res = await pending;
    const body = (await res.json()) as { checks: { eventLoop: { ok: boolean; detail: string } } };
    expect(res.status).toBe(503);
    expect(body.checks.eventLoop.ok).toBe(false);
    expect(body.checks.eventLoop.detail).toMatch(/event-loop lag \d+ ms \(limit 300 ms\)/);
    await waitFor(
      () => getJson(`${base}/healthz`),
      (r) => r.status === 200,
      5000,
      20,
    );
  });

  it('/healthz answers 503 when the scheduler has stopped ticking', async () => {
    const { base, scheduler } = await serve(300);
    await scheduler.stop();
    const h = await getJson(`${base}/healthz`);
    expect(h.status).toBe(503);
    expect(h.body).toMatchObject({
      status: 'unhealthy',
      checks: { scheduler: { ok: false, detail: 'scheduler stopped' } },
    });
  });

  it('/readyz answers 503 with a reason once draining starts', async () => {
    const { base, readiness } = await serve(300);
    readiness.markDraining();
    const r = await getJson(`${base}/readyz`);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ ready: false, reason: 'shutting down' });
  });

  it('serves Prometheus text with process and Node metrics on /metrics', async () => {
    const { base } = await serve(300);
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^# TYPE process_cpu_user_seconds_total counter$/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    expect(text).toMatch(/^pgmaintd_build_info\{version="\d+\.\d+\.\d+",node_version="v\d+/m);
  });
});
