// The real daemon as a separate process: readiness across a real database stop and restart,
// two-step shutdown, exit codes, and no password in its output or in any process's argv.
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { getJson, spawnCli, startDaemon, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';

let cluster: LocalCluster;
beforeAll(async () => {
  cluster = await startPrivateCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

const baseEnv = () => ({
  DATABASE_URL: cluster.url(), // carries the password on purpose: it must never show up
  DB_SSL_MODE: 'disable',
  READYZ_INTERVAL: '200ms',
  READYZ_TIMEOUT: '500ms',
  METRICS_INTERVAL: '1s',
  LOG_LEVEL: 'trace',
});

/** Every /proc/<pid>/cmdline on the machine, for a secret scan. */
function allCmdlines(): string {
  let out = '';
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      out += `${readFileSync(`/proc/${pid}/cmdline`, 'utf8')}\n`;
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

async function pgMaintdSessions(): Promise<number> {
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: cluster.url() });
  await c.connect();
  try {
    const r = await c.query<{ n: string }>(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'pg-maintd'",
    );
    return Number(r.rows[0]!.n);
  } finally {
    await c.end();
  }
}

describe('pg-maintd run (spawned)', () => {
  it('keeps /healthz 200 and moves /readyz 200 -> 503 -> 200 across a real stop and restart of PostgreSQL', async () => {
    const d = await startDaemon(baseEnv());
    const timings: number[] = [];
    const probe = async (path: string) => {
      const r = await getJson(`${d.base}${path}`);
      timings.push(r.ms);
      return r;
    };
    try {
      await waitFor(
        () => probe('/readyz'),
        (r) => r.status === 200,
      );
      expect((await probe('/healthz')).status).toBe(200);

      const metricsText = async () => (await fetch(`${d.base}/metrics`)).text();
      // every collector polls on its own: wait for the two this test reads
      await waitFor(
        metricsText,
        (t) =>
          /^pg_up 1$/m.test(t) &&
          /^pg_stat_activity_count\{/m.test(t) &&
          /^pg_scrape_collector_success\{collector="locks"\} 1$/m.test(t),
        10_000,
      );

      await cluster.stopServer();
      const down = await waitFor(
        () => probe('/readyz'),
        (r) => r.status === 503,
      );
      expect(down.body).toMatchObject({ status: 'not ready', ready: false });
      expect(down.body.reason).toBe('unreachable'); // a word: the server's error text goes to the log
      for (let i = 0; i < 10; i++) expect((await probe('/healthz')).status).toBe(200);
      await d.waitForLog((l) => l.msg.startsWith('database unreachable') && typeof l.hint === 'string');
      // the exporter tells the truth too, and answers from its cache while the database is down
      // pg_up drops with the first failed attempt; the collectors' own polls follow within seconds
      // (early polls come at most one round per 5 s)
      const downText = await waitFor(
        metricsText,
        (t) =>
          /^pg_up 0$/m.test(t) && /^pg_scrape_collector_success\{collector="stat_activity"\} 0$/m.test(t),
        15_000,
      );
      expect(downText).not.toMatch(/^pg_stat_activity_count\{/m);

      await cluster.startServer();
      await waitFor(
        () => probe('/readyz'),
        (r) => r.status === 200,
      );
      expect((await probe('/healthz')).status).toBe(200);
      expect(d.child.exitCode).toBeNull(); // never restarted

      // Both endpoints answer from memory, even while the database was down: a probe that waited for
      // the database would take READYZ_TIMEOUT (500 ms). The median, not a tail: on a loaded machine a
      // few answers are slow for reasons of the machine's, which benchmarks measure, not tests.
      const sorted = [...timings].sort((a, b) => a - b);
      expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(500);

      // No password in the argv of any process on the machine while it runs.
      expect(allCmdlines()).not.toContain(cluster.password);

      d.child.kill('SIGTERM');
      const exit = await d.exited;
      expect(exit).toEqual({ code: EXIT.OK, signal: null });
      expect(d.lines().some((l) => l.msg === 'stopped' && l.exitCode === 0)).toBe(true);
      expect(await pgMaintdSessions()).toBe(0); // pools closed
      expect(d.output()).not.toContain(cluster.password);
    } finally {
      d.child.kill('SIGKILL');
    }
  });

  it('drains on SIGTERM within the grace period, stopping components in reverse order', async () => {
    const d = await startDaemon({ ...baseEnv(), SHUTDOWN_GRACE_PERIOD: '10s' });
    await waitFor(
      () => getJson(`${d.base}/readyz`),
      (r) => r.status === 200,
    );
    expect(await pgMaintdSessions()).toBeGreaterThan(0);
    const t0 = Date.now();
    d.child.kill('SIGTERM');
    const exit = await d.exited;
    expect(exit.code).toBe(EXIT.OK);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const stopped = d
      .lines()
      .filter((l) => l.msg === 'stopped' && typeof l.component === 'string')
      .map((l) => l.component);
    expect(stopped).toEqual([
      'scheduler', // started last (jobs run only on a migrated schema), stopped first
      'http-server',
      'readiness-probe',
      'metrics-poller',
      'event-loop-watchdog',
      'pool:readyz',
      'pool:main',
      'storage',
    ]);
    expect(await pgMaintdSessions()).toBe(0);
    expect(d.output()).not.toContain(cluster.password);
  });

  describe('with work in flight that will not finish (a database that accepts but never answers)', () => {
    let blackhole: Server;
    const sockets: Socket[] = [];
    let url: string;
    beforeAll(async () => {
      blackhole = createServer((s) => sockets.push(s));
      await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
      const port = (blackhole.address() as { port: number }).port;
      url = `postgresql://postgres:${cluster.password}@127.0.0.1:${port}/postgres`;
    });
    afterAll(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => blackhole.close(r));
    });

    /** A daemon whose readiness check hangs on the blackhole: its drain cannot finish quickly. */
    async function startStuckDaemon(grace: string) {
      const d = await startDaemon({
        ...baseEnv(),
        DATABASE_URL: url,
        READYZ_TIMEOUT: '30s',
        SHUTDOWN_GRACE_PERIOD: grace,
      });
      await waitFor(
        async () => sockets.length,
        (n) => n > 0,
      );
      return d;
    }

    it.each([
      ['SIGTERM', EXIT.FORCED_SIGTERM],
      ['SIGINT', EXIT.FORCED_SIGINT],
    ] as const)(
      'a second %s forces the exit at once, with %i (128 + the signal number)',
      async (signal, code) => {
        const d = await startStuckDaemon('20s');
        d.child.kill(signal);
        await d.waitForLog((l) => l.msg.startsWith('draining'));
        const t0 = Date.now();
        d.child.kill(signal);
        const exit = await d.exited;
        expect(exit.code).toBe(code);
        expect(Date.now() - t0).toBeLessThan(5000);
        expect(d.lines().some((l) => l.msg === 'second signal: forcing exit now')).toBe(true);
      },
    );

    it('the grace period running out forces the exit with 124', async () => {
      const d = await startStuckDaemon('1s');
      const t0 = Date.now();
      d.child.kill('SIGTERM');
      const exit = await d.exited;
      expect(exit.code).toBe(EXIT.GRACE_EXPIRED);
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(10_000);
      expect(d.lines().some((l) => l.msg.startsWith('grace period expired'))).toBe(true);
      expect(d.output()).not.toContain(cluster.password);
    });
  });

  it('an unhandled rejection is logged and leads to an orderly shutdown with exit 70', async () => {
    const script = `
      const { Lifecycle } = await import(${JSON.stringify(new URL('../../dist/lifecycle/lifecycle.js', import.meta.url).href)});
      const { ShutdownController } = await import(${JSON.stringify(new URL('../../dist/lifecycle/shutdown.js', import.meta.url).href)});
      const { createLogger } = await import(${JSON.stringify(new URL('../../dist/log/logger.js', import.meta.url).href)});
      const logger = createLogger({ level: 'info', format: 'json' });
      const lifecycle = new Lifecycle(logger);
      await lifecycle.start({ name: 'worker', start: async () => {}, stop: async () => logger.info('worker stopped') });
      new ShutdownController({ lifecycle, logger, graceMs: 5000 }).install();
      setInterval(() => {}, 1000);
      Promise.reject(new Error('nobody caught me'));
    `;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    expect(code).toBe(EXIT.SOFTWARE);
    expect(out).toMatch(/"level":60.*unhandled promise rejection; shutting down/);
    expect(out).toContain('nobody caught me');
    expect(out.indexOf('worker stopped')).toBeGreaterThan(out.indexOf('unhandled promise rejection'));
  });
});

describe('pg-maintd CLI', () => {
  it('check-config prints the effective configuration, masked, and exits 0', async () => {
    const cli = spawnCli(['check-config'], { DATABASE_URL: cluster.url(), DB_SSL_MODE: 'disable' });
    const { code } = await cli.exited;
    expect(code).toBe(0);
    expect(cli.output()).toContain('configuration is valid');
    expect(cli.output()).toContain('postgresql://postgres:****@127.0.0.1');
    expect(cli.output()).not.toContain(cluster.password);
  });

  it('bad configuration: exit 78, every problem listed, secrets masked, no stack trace', async () => {
    const cli = spawnCli(['run', '--http-port', 'eighty'], {
      DATABASE_URL: `mysql://postgres:${cluster.password}@h/db`,
      DB_POOL_MAX: '0',
    });
    const { code } = await cli.exited;
    expect(code).toBe(EXIT.CONFIG);
    const out = cli.output();
    expect(out).toMatch(/invalid configuration: 3 problems/);
    expect(out).toMatch(
      /DATABASE_URL \(from environment DATABASE_URL\): got "mysql:\/\/postgres:\*\*\*\*@h\/db"/,
    );
    expect(out).toMatch(/HTTP_PORT \(from flag --http-port\): got "eighty"/);
    expect(out).not.toContain(cluster.password);
    expect(out).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('unknown subcommands and flags exit 64 with a pointer to --help', async () => {
    for (const args of [['frobnicate'], ['run', '--no-such-flag'], ['--nope']]) {
      const cli = spawnCli(args, {});
      expect((await cli.exited).code).toBe(EXIT.USAGE);
      expect(cli.output()).toMatch(/error: unknown (command|option)/);
      expect(cli.output()).toContain('pg-maintd --help');
    }
  });

  it('--help and --version exit 0', async () => {
    const help = spawnCli(['--help'], {});
    expect((await help.exited).code).toBe(0);
    expect(help.output()).toMatch(/Usage: pg-maintd/);
    const version = spawnCli(['--version'], {});
    expect((await version.exited).code).toBe(0);
    expect(version.output().trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('start-up failure', () => {
  it('a port already in use: a clear message, an orderly exit 69, nothing left running', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const cli = spawnCli(['run'], { ...baseEnv(), HTTP_HOST: '127.0.0.1', HTTP_PORT: String(port) });
      const exit = await cli.exited;
      expect(exit.code).toBe(EXIT.UNAVAILABLE);
      expect(cli.output()).toContain(
        `cannot listen on 127.0.0.1:${port}: the port is in use (set HTTP_PORT)`,
      );
      expect(cli.output()).not.toContain(cluster.password);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});
