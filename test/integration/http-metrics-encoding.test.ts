// /metrics content coding: gzip for a client that accepts it (Prometheus sends `Accept-Encoding:
// gzip`), the same bytes once gunzipped, weights honoured (q=0 refuses), Vary on every answer, and
// promtool reads the body. A real HttpServer on a registry with a polled family of 2,000 series.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { gunzipSync } from 'node:zlib';
import { Counter } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CachedFamily } from '../../src/metrics/family.js';
import { CountingRegistry } from '../../src/metrics/registry.js';
import { serveHttp, type ServedHttp } from '../support/http.js';

let served: ServedHttp;
let hits: Counter;
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

beforeAll(async () => {
  const registry = new CountingRegistry(); // no process metrics: nothing moves between two scrapes
  const rows = new CachedFamily<'datname' | 'relname'>(registry, {
    name: 'pg_demo_rows',
    help: 'Rows of a demo table, with "quotes" in a label.',
    type: 'gauge',
    labelNames: ['datname', 'relname'],
  });
  rows.replace(
    Array.from({ length: 2000 }, (_, i) => ({
      labels: { datname: i % 3 ? 'app' : 'a"b\\c', relname: `t${i}` },
      value: i * 1.5,
    })),
  );
  hits = new Counter({ name: 'pgmaintd_demo_hits_total', help: 'A live counter.', registers: [registry] });
  served = await serveHttp({ registry });
});
afterAll(async () => {
  agent.destroy();
  await served?.server.stop();
});

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** GET or HEAD on one keep-alive connection, the body as sent (not decompressed). */
function get(acceptEncoding?: string, method = 'GET'): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const headers = acceptEncoding === undefined ? {} : { 'accept-encoding': acceptEncoding };
    const req = http.request(
      { host: '127.0.0.1', port: served.port, path: '/metrics', method, agent, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const TEXT = 'text/plain; version=0.0.4; charset=utf-8';

describe('/metrics content coding', () => {
  it('gzip when accepted: the same bytes once gunzipped, a fraction of the size, Vary set', async () => {
    const plain = await get();
    const gz = await get('gzip');
    expect(plain.status).toBe(200);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.headers['content-type']).toBe(TEXT);
    expect(plain.headers.vary).toMatch(/accept-encoding/i);
    expect(gz.status).toBe(200);
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(gz.headers['content-type']).toBe(TEXT);
    expect(gz.headers.vary).toMatch(/accept-encoding/i);
    expect(Number(gz.headers['content-length'])).toBe(gz.body.length);
    expect(gunzipSync(gz.body).equals(plain.body)).toBe(true);
    expect(gz.body.length).toBeLessThan(plain.body.length / 4);
    // as Prometheus and undici's fetch ask for it
    const prom = await get('gzip, deflate');
    expect(prom.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(prom.body).equals(plain.body)).toBe(true);
  });

  it('honours weights: q=0 refuses gzip; refusing both codings is a 406', async () => {
    for (const header of ['gzip;q=0', 'deflate', 'gzip;q=0.2, identity;q=0.5', '']) {
      const r = await get(header);
      expect(r.status, header).toBe(200);
      expect(r.headers['content-encoding'], header).toBeUndefined();
      expect(r.body.toString()).toMatch(/^pg_demo_rows\{datname="app",relname="t1"\} 1.5$/m);
    }
    for (const header of ['identity;q=0', 'gzip;q=0, identity;q=0', '*;q=0']) {
      const r = await get(header);
      expect(r.status, header).toBe(406);
      expect(r.headers.vary).toMatch(/accept-encoding/i);
    }
    expect((await get('identity;q=0, gzip')).headers['content-encoding']).toBe('gzip');
  });

  it('a live value changed between two scrapes shows in both codings', async () => {
    const before = gunzipSync((await get('gzip')).body).toString();
    hits.inc(5);
    const gz = await get('gzip');
    const plain = await get();
    const text = gunzipSync(gz.body).toString();
    expect(text).not.toBe(before);
    expect(text).toMatch(/^pgmaintd_demo_hits_total 5$/m);
    expect(Buffer.from(text).equals(plain.body)).toBe(true);
  });

  it('HEAD tells the coding without a body', async () => {
    const r = await get('gzip', 'HEAD');
    expect(r.status).toBe(200);
    expect(r.headers['content-encoding']).toBe('gzip');
    expect(r.body.length).toBe(0);
  });

  it('promtool check metrics reads the gunzipped body without a finding', async () => {
    const promtool = spawnSync('promtool', ['--version']);
    expect(promtool.error, 'promtool is missing: apt-get install prometheus').toBeUndefined();
    const text = gunzipSync((await get('gzip')).body);
    const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(`${run.stdout}${run.stderr}`.trim()).toBe('');
    expect(run.status).toBe(0);
  });
});
