// Liveness and readiness, in-process: a wedged event loop or a stalled scheduler makes /healthz 503.
import { createServer, type Server } from 'node:net';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../src/core/free-port.js';
import { DbPool } from '../../src/db/pool.js';
import { ReadinessProbe } from '../../src/health/readiness.js';
import { EventLoopWatchdog } from '../../src/health/watchdog.js';
import { HttpServer } from '../../src/http/server.js';
import { Lifecycle } from '../../src/lifecycle/lifecycle.js';
import { createLogger } from '../../src/log/logger.js';
import { createRegistry } from '../../src/metrics/registry.js';
import { Scheduler } from '../../src/schedule/scheduler.js';
import { getJson, waitFor } from '../support/daemon.js';
import { serveHttp } from '../support/http.js';
import { startPrivateCluster, useTestDatabase } from '../support/postgres.js';

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
    // wedged until the answer comes: blocks of 800 ms with only a moment between them for I/O, so
    // whenever the request is served (on a busy machine, several loop turns after it is sent) the
    // watchdog's last beat was late by far more than the limit
    let wedged = true;
    const hog = (async () => {
      while (wedged) {
        blockEventLoop(800);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const res = await fetch(`${base}/healthz`).finally(() => {
      wedged = false;
    });
    await hog;
    const body = (await res.json()) as { checks: { eventLoop: { ok: boolean; detail: string } } };
    expect(res.status).toBe(503);
    expect(body.checks.eventLoop.ok).toBe(false);
    expect(body.checks.eventLoop.detail).toMatch(/event-loop lag \d+ ms \(limit 300 ms\)/);
    await waitFor(
      () => getJson(`${base}/healthz`),
      (r) => r.status === 200,
      30_000,
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
    expect(r.body).toMatchObject({ ready: false, reason: 'shutting_down' });
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

describe('/readyz, open to anyone, says why in a word', () => {
  // names that must never reach an unauthenticated client; the log gets them
  const USER = 'readyz_secret_user';
  const MISSING_DB = 'readyz_secret_db';
  const HOST = 'readyz-secret-host.invalid';

  /** A readiness probe on `url`, its log lines, and /readyz once it has failed with a reason. */
  async function notReady(url: string, expected: string, settle = 5000) {
    const logs = new PassThrough();
    let logText = '';
    logs.on('data', (d: Buffer) => (logText += d.toString()));
    const log = createLogger({ level: 'info', format: 'json', destination: logs });
    lifecycle = new Lifecycle(logger);
    const pool = await lifecycle.start(
      new DbPool(
        {
          url,
          ssl: { mode: 'disable', rejectUnauthorized: true },
          pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 1000 },
        },
        { name: 'readyz', logger },
      ),
    );
    const readiness = await lifecycle.start(
      new ReadinessProbe(pool, { intervalMs: 200, timeoutMs: 1000, logger: log }),
    );
    const http = await serveHttp({ readiness: () => readiness.state() });
    lifecycle.defer('http', () => http.server.stop());
    const r = await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${http.port}/readyz`);
        return { status: res.status, text: await res.text() };
      },
      (x) => x.status === 503 && (JSON.parse(x.text) as { reason: string }).reason === expected,
      settle,
      50,
    );
    await waitFor(
      async () => logText,
      (t) => t.includes(`reason ${expected}`),
      settle,
      50,
    );
    return { body: JSON.parse(r.text) as Record<string, unknown>, text: r.text, log: logText };
  }

  const url = (change: (u: URL) => void) => {
    const u = new URL(db.url);
    change(u);
    return u.toString();
  };
  const expectNoNames = (text: string, ...names: string[]) => {
    for (const n of names) expect(text).not.toContain(n);
    expect(text).not.toMatch(/password|does not exist|ECONNREFUSED|ENOTFOUND|127\.0\.0\.1|localhost/i);
  };

  it('a wrong password: auth', async () => {
    const r = await notReady(
      url((u) => {
        u.username = USER;
        u.password = 'wrong-password';
      }),
      'auth',
    );
    expect(Object.keys(r.body).sort()).toEqual(['checkedAt', 'ready', 'reason', 'since', 'status']);
    expectNoNames(r.text, USER, new URL(db.url).pathname.slice(1));
    expect(r.log).toContain(USER); // the detail is in the log
    expect(r.log).toMatch(/password authentication failed/);
    expect(r.log).not.toContain('wrong-password');
  });

  it('a missing database: database_missing', async () => {
    const r = await notReady(
      url((u) => (u.pathname = `/${MISSING_DB}`)),
      'database_missing',
    );
    expectNoNames(r.text, MISSING_DB, new URL(db.url).username);
    expect(r.log).toContain(`database \\"${MISSING_DB}\\" does not exist`); // JSON-escaped
  });

  it('a closed port and an unknown host: unreachable', async () => {
    const port = await freePort();
    const closed = await notReady(
      url((u) => (u.port = String(port))),
      'unreachable',
    );
    expectNoNames(closed.text, String(port));
    expect(closed.log).toMatch(/ECONNREFUSED/);
    await lifecycle!.stopAll();
    const unknown = await notReady(
      url((u) => (u.hostname = HOST)),
      'unreachable',
    );
    expectNoNames(unknown.text, HOST);
    expect(unknown.log).toContain(HOST);
  });

  it('a server that accepts and never answers: timeout', async () => {
    const blackhole: Server = createServer(() => undefined);
    await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blackhole.address() as { port: number }).port;
      const r = await notReady(
        url((u) => (u.port = String(port))),
        'timeout',
      );
      expectNoNames(r.text, String(port));
    } finally {
      await lifecycle?.stopAll();
      lifecycle = undefined;
      blackhole.close();
    }
  });

  it('a server at max_connections: too_many_connections', async () => {
    // a private cluster: filling the shared one would fail other test files
    const cluster = await startPrivateCluster({
      settings: { max_connections: 4, superuser_reserved_connections: 1 },
    });
    const admin = new pg.Client({ connectionString: cluster.url('postgres') });
    await admin.connect();
    const held: pg.Client[] = [];
    try {
      await admin.query(`CREATE ROLE ${USER} LOGIN PASSWORD 'right-password'`);
      const u = new URL(cluster.url('postgres'));
      u.username = USER;
      u.password = 'right-password';
      for (let i = 0; i < 2; i++) {
        const c = new pg.Client({ connectionString: u.toString() });
        await c.connect();
        held.push(c);
      }
      const r = await notReady(u.toString(), 'too_many_connections');
      expectNoNames(r.text, USER);
      expect(r.log).toMatch(/too many clients|remaining connection slots/);
    } finally {
      await lifecycle?.stopAll();
      lifecycle = undefined;
      await Promise.all(held.map((c) => c.end()));
      await admin.end();
      await cluster.stop();
    }
  });
});
