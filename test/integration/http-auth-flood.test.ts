// A flood of wrong passwords does not lock out the right ones, nor stall the event loop: a real
// HttpServer with real bcrypt (cost 10), one client flooding from 127.0.0.1 over many connections,
// a Prometheus-like scraper from 127.0.0.2 whose credentials are first seen during the flood, and
// a kubelet-like prober from 127.0.0.3. Loopback addresses stand in for three machines.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import bcrypt from 'bcryptjs';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { basicAuth, request, serveHttp, type ServedHttp } from '../support/http.js';
import { tempDir } from '../support/temp.js';

const SCRAPER = '127.0.0.2';
const PROBER = '127.0.0.3';
let served: ServedHttp | undefined;
afterEach(async () => {
  await served?.server.stop();
  served = undefined;
});

// The flooder: another process (another machine, as far as the server can tell), so its own work
// does not load the event loop under test. It stops and reports when its stdin closes.
const FLOODER = `
const http = require('node:http');
const [port, connections] = process.argv.slice(1).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const statuses = {};
let stop = false;
process.stdin.on('end', () => (stop = true)).resume();
const one = (i, n) => new Promise((resolve) => {
  const auth = 'Basic ' + Buffer.from('prometheus:guess-' + i + '-' + n).toString('base64');
  const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent, headers: { authorization: auth } }, (res) => {
    statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
    res.resume();
    res.on('end', resolve);
  });
  req.on('error', () => { statuses.error = (statuses.error ?? 0) + 1; resolve(); });
});
const loops = Array.from({ length: connections }, async (_, i) => { for (let n = 0; !stop; n++) await one(i, n); });
setInterval(() => process.stdout.write(JSON.stringify(statuses) + '\\n'), 100).unref();
Promise.all(loops).then(() => { process.stdout.write(JSON.stringify(statuses) + '\\n'); agent.destroy(); });
`;

function flood(port: number, connections: number) {
  const child = spawn(process.execPath, ['-e', FLOODER, String(port), String(connections)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let last: Record<string, number> = {};
  let buffered = '';
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    if (lines.length) last = JSON.parse(lines.at(-1)!) as Record<string, number>;
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    statuses: () => last,
    async stop() {
      child.stdin.end();
      await exited;
      return last;
    },
  };
}

const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

describe('a flood of wrong passwords', () => {
  it('does not lock out right passwords first seen during it, and leaves the event loop and /healthz fast', async () => {
    const users = Array.from({ length: 4 }, (_, i) => ({
      user: `scraper${i}`,
      password: `right-pw-${i}-c0ffee`,
    }));
    const dir = tempDir('http-flood-');
    const configFile = join(dir, 'web-config.yml');
    const hashes = Object.fromEntries(users.map((u) => [u.user, bcrypt.hashSync(u.password, 10)]));
    writeFileSync(
      configFile,
      toYaml({ basic_auth_users: { prometheus: bcrypt.hashSync('x', 10), ...hashes } }),
    );
    const t0 = performance.now();
    bcrypt.compareSync('timing', hashes.scraper0!);
    const bcryptMs = performance.now() - t0; // one check at cost 10 on this machine, now

    served = await serveHttp({ web: { configFile } });
    const { port, server } = served;
    const loop = monitorEventLoopDelay({ resolution: 5 });
    const f = flood(port, 24);
    const probes: number[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const r = await request(port, '/healthz', { localAddress: PROBER });
        expect(r.status).toBe(200);
        probes.push(r.ms);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    try {
      // the flood is on: bcrypt has refused some of it, and more is waiting
      const answered = () => Object.values(f.statuses()).reduce((a, b) => a + b, 0);
      while ((f.statuses()['401'] ?? 0) < 3 || answered() < 50)
        await new Promise((resolve) => setTimeout(resolve, 20));
      const bcryptBefore = server.bcryptMs;
      const windowStart = performance.now();
      loop.enable();

      // each scrape brings a password never checked before (no cache can help), as after a reload
      const scrapes = [];
      for (const u of users) {
        const r = await request(port, '/metrics', {
          auth: basicAuth(u.user, u.password),
          localAddress: SCRAPER,
        });
        scrapes.push(r);
        expect(r.status, `${u.user} during the flood`).toBe(200);
        expect(r.body).toContain('pgmaintd_build_info');
      }
      // and a password changed during the flood works at the next scrape
      const changed = 'changed-pw-9e1f';
      writeFileSync(
        configFile,
        toYaml({ basic_auth_users: { ...hashes, scraper0: bcrypt.hashSync(changed, 10) } }),
      );
      await served.waitForLog((l) => l.msg === 'web config reloaded');
      const after = await request(port, '/metrics', {
        auth: basicAuth('scraper0', changed),
        localAddress: SCRAPER,
      });
      expect(after.status).toBe(200);
      scrapes.push(after);

      loop.disable();
      const windowMs = performance.now() - windowStart;
      const share = (server.bcryptMs - bcryptBefore) / windowMs;
      const report = {
        bcryptMs: Math.round(bcryptMs),
        scrapesMs: scrapes.map((s) => Math.round(s.ms)),
        probeP50: Math.round(percentile(probes, 0.5)),
        probeP95: Math.round(percentile(probes, 0.95)),
        loopP50: Math.round(loop.percentile(50) / 1e6),
        loopP99: Math.round(loop.percentile(99) / 1e6),
        share: Math.round(share * 100) / 100,
        statuses: f.statuses(),
      };
      // a scrape waits its turn among the clients (one check running, the pause after it, its own),
      // and is answered within Prometheus's default scrape timeout (10 s) however busy the machine:
      // locked out, it would wait for the flood to end
      for (const s of scrapes)
        expect(s.ms, JSON.stringify(report)).toBeLessThan(Math.max(10_000, bcryptMs * 25));
      // bcrypt runs off the event loop: timers and probes are late by far less than one check
      // would block it (on the event loop, back to back, half the probes would wait for one)
      expect(loop.percentile(50) / 1e6, JSON.stringify(report)).toBeLessThan(bcryptMs / 4);
      expect(percentile(probes, 0.5), JSON.stringify(report)).toBeLessThan(bcryptMs / 2);
      // and at most half of one core goes to bcrypt, however hard the flood
      expect(share, JSON.stringify(report)).toBeLessThan(0.6);
      console.log(JSON.stringify(report));
    } finally {
      probing = false;
      loop.disable();
      await prober;
    }
    const statuses = await f.stop();
    expect(statuses['200'] ?? 0).toBe(0);
    expect(statuses['401']).toBeGreaterThan(0);
    // the flood is said in the log, not line by line at warn
    const warns = served
      .lines()
      .filter((l) => l.level === 40 && String(l.msg).startsWith('unauthorized requests'));
    expect(warns.length).toBe(1);
    expect(served.logText()).not.toContain('right-pw-');
  });
});
