// The metrics port against clients that misbehave: TLS offers only forward-secret suites by
// default (checked with a real TLS client), unknown paths and errors answer in a word and are
// logged without flooding, slow or silent connections are closed in seconds, and one client cannot
// hold all the sockets. A real HttpServer, real sockets.
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { Gauge } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { createRegistry } from '../../src/metrics/registry.js';
import { waitFor } from '../support/daemon.js';
import { request, serveHttp, type ServedHttp } from '../support/http.js';
import { makeTestPki, type TestPki } from '../support/tls.js';
import { tempDir } from '../support/temp.js';

let pki: TestPki;
let served: ServedHttp[] = [];
beforeAll(() => {
  pki = makeTestPki();
});
afterEach(async () => {
  await Promise.all(served.map((s) => s.server.stop()));
  served = [];
});

async function serve(...args: Parameters<typeof serveHttp>) {
  const s = await serveHttp(...args);
  served.push(s);
  return s;
}

/** TLS with the test PKI's RSA server certificate: RSA key exchange is possible with it. */
async function serveTls(tlsConfig: Record<string, unknown> = {}) {
  const dir = tempDir('http-hardening-');
  writeFileSync(join(dir, 'tls.crt'), pki.serverCert);
  writeFileSync(join(dir, 'tls.key'), pki.serverKey);
  const configFile = join(dir, 'web-config.yml');
  writeFileSync(
    configFile,
    toYaml({
      tls_server_config: { cert_file: 'tls.crt', key_file: 'tls.key', ...tlsConfig },
      basic_auth_users: {},
    }),
  );
  return serve({ web: { configFile } });
}

/** A TLS 1.2 handshake offering only `cipher`: the suite the server chose, or the error. */
function handshake(port: number, cipher: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: readFileSync(pki.caFile),
      servername: 'localhost',
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers: cipher,
    });
    socket.once('secureConnect', () => {
      resolve(socket.getCipher().name);
      socket.destroy();
    });
    socket.once('error', (err) => resolve(`refused: ${err.message}`));
  });
}

/** Resolves with how long the server took to close `socket` (it never closes it itself). */
function closedAfter(socket: net.Socket): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(performance.now() - t0));
  });
}

describe('TLS without cipher_suites', () => {
  it("offers only forward-secret suites at TLS 1.2, as exporter-toolkit (Go's default) does", async () => {
    const { port } = await serveTls();
    // ECDHE key exchange: accepted
    for (const suite of [
      'ECDHE-RSA-AES128-GCM-SHA256',
      'ECDHE-RSA-AES256-GCM-SHA384',
      'ECDHE-RSA-CHACHA20-POLY1305',
    ])
      expect(await handshake(port, suite)).toBe(suite);
    // RSA key exchange (no forward secrecy): refused. DHE is forward secret but Go offers none.
    for (const suite of ['AES128-GCM-SHA256', 'AES256-GCM-SHA384', 'AES128-SHA', 'DHE-RSA-AES128-GCM-SHA256'])
      expect(await handshake(port, suite)).toMatch(
        /^refused: .*handshake failure|^refused: .*no shared cipher/i,
      );
  });

  it('cipher_suites, when set, still decides', async () => {
    const { port } = await serveTls({ cipher_suites: ['TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'] });
    expect(await handshake(port, 'ECDHE-RSA-AES256-GCM-SHA384')).toBe('ECDHE-RSA-AES256-GCM-SHA384');
    expect(await handshake(port, 'ECDHE-RSA-AES128-GCM-SHA256')).toMatch(/^refused/);
  });
});

describe('unknown paths and errors', () => {
  it('404s answer in a word and are logged at debug, with one warning for many', async () => {
    const s = await serve();
    const before = s.lines().length; // the start's own lines
    for (let i = 0; i < 30; i++) {
      const r = await request(s.port, `/wp-admin/${i}.php?token=secret-in-query-${i}`, {
        method: i % 2 ? 'POST' : 'GET',
      });
      expect(r.status).toBe(404);
      expect(r.body).toBe('Not Found\n');
    }
    const lines = s.lines().slice(before);
    expect(lines.filter((l) => l.msg === 'not found' && l.level === 20)).toHaveLength(30);
    const warns = lines.filter((l) => l.level >= 40);
    expect(warns).toHaveLength(1);
    expect(warns[0]!.msg).toMatch(/unknown paths.*at most once a minute/);
    expect(lines.filter((l) => l.level === 30)).toEqual([]); // no line per request at info
    expect(s.logText()).not.toContain('secret-in-query');
  });

  it('an internal error answers 500 without its message; the message goes to the log', async () => {
    const registry = createRegistry();
    new Gauge({
      name: 'broken_gauge',
      help: 'throws when collected',
      registers: [registry],
      collect() {
        throw new Error('connect to db.internal.example:5432 as app_admin failed');
      },
    });
    const s = await serve({ registry });
    const r = await request(s.port, '/metrics');
    expect(r.status).toBe(500);
    expect(r.body).toBe('Internal Server Error\n');
    const logged = s.lines().find((l) => l.msg === 'request failed')!;
    expect(logged.level).toBe(50);
    expect(JSON.stringify(logged)).toContain('db.internal.example');
  });

  it('a body announced on a route that takes none is answered at once, not waited for', async () => {
    const s = await serve();
    // a megabyte announced, none sent: the answer must not wait for it
    const r = await request(s.port, '/metrics', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': String(1 << 20) },
      timeoutMs: 5000,
    });
    expect([404, 413]).toContain(r.status);
    expect(r.body).toMatch(/^(Not Found|Payload Too Large|Content Too Large)\n$/);
  });
});

describe('slow and silent connections', () => {
  it('a client dribbling its headers, and one that never sends, are closed within seconds', async () => {
    const s = await serve();
    const dribbler = net.connect(s.port, '127.0.0.1');
    const dribbled = closedAfter(dribbler);
    dribbler.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => dribbler.write('X'), 500);
    const silent = net.connect(s.port, '127.0.0.1');
    const silenced = closedAfter(silent);
    try {
      // HEADERS_TIMEOUT_MS (10 s) and the check every second; Node's defaults were 60 s and 30 s
      expect(await dribbled).toBeLessThan(14_000);
      expect(await silenced).toBeLessThan(14_000);
      expect((await request(s.port, '/healthz')).status).toBe(200);
    } finally {
      clearInterval(drip);
      dribbler.destroy();
      silent.destroy();
    }
  }, 30_000);

  it('a TLS connection that never completes its handshake is closed within seconds', async () => {
    const s = await serveTls();
    const silent = net.connect(s.port, '127.0.0.1');
    expect(await closedAfter(silent)).toBeLessThan(14_000); // Node's default: 120 s
  }, 30_000);

  it('one client holding many connections is refused past 32; another client still gets in', async () => {
    const s = await serve();
    const sockets = Array.from({ length: 40 }, () => net.connect(s.port, '127.0.0.1'));
    let closed = 0;
    for (const socket of sockets) {
      socket.on('error', () => undefined);
      socket.once('close', () => closed++);
    }
    try {
      await waitFor(
        async () => closed,
        (n) => n >= 8,
        5000,
        20,
      );
      expect((await request(s.port, '/healthz', { localAddress: '127.0.0.2' })).status).toBe(200);
      expect(closed).toBe(8); // the first 32 stay open
      const warn = s.lines().find((l) => l.level === 40 && String(l.msg).startsWith('connections refused'));
      expect(warn).toMatchObject({ remoteAddress: '127.0.0.1', limit: 32 });
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });
});
