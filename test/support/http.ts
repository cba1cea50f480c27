/**
 * A real HttpServer in-process, its log lines captured, and a plain HTTP(S) client that opens a
 * fresh connection per request (optionally from another loopback address, to be another client).
 */
import http from 'node:http';
import https from 'node:https';
import { PassThrough } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { HttpServer, type HttpDeps } from '../../src/http/server.js';
import { createLogger } from '../../src/log/logger.js';
import { createRegistry } from '../../src/metrics/registry.js';
import type { LogLine } from './daemon.js';

export const basicAuth = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

export interface ServedHttp {
  server: HttpServer;
  port: number;
  logText(): string;
  lines(): LogLine[];
  /** Resolves with the first log line (from now on or already written) that matches. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
}

export async function serveHttp(deps: Partial<HttpDeps> = {}): Promise<ServedHttp> {
  const logs = new PassThrough();
  let text = '';
  const waiters: Array<() => void> = [];
  logs.on('data', (d: Buffer) => {
    text += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  const lines = () =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
  const server = new HttpServer({
    host: '127.0.0.1',
    port: 0,
    registry: createRegistry(),
    logger: createLogger({ level: 'debug', format: 'json', destination: logs }),
    liveness: { eventLoop: () => ({ ok: true, detail: 'fine' }) },
    readiness: () => ({ ready: true, since: new Date().toISOString() }),
    ...deps,
  });
  await server.start();
  return {
    server,
    port: server.address.port,
    logText: () => text,
    lines,
    waitForLog(pred, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`log line not seen within ${timeoutMs} ms; log:\n${text}`)),
          timeoutMs,
        );
        const check = () => {
          const hit = lines().find(pred);
          if (!hit) return void waiters.push(check);
          clearTimeout(timer);
          resolve(hit);
        };
        check();
      });
    },
  };
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
  peer?: string;
}

export interface RequestOptions {
  auth?: string;
  method?: string;
  /** PEM of the CA to trust: the request goes over TLS. */
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** Another loopback address (127.0.0.2, ...) makes the request come from another client. */
  localAddress?: string;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** One request on a fresh connection (no keep-alive: a reload must show on the next connection). */
export function request(port: number, path: string, o: RequestOptions = {}): Promise<Answer> {
  const t0 = performance.now();
  const tls = o.ca !== undefined;
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = {
      host: '127.0.0.1',
      port,
      path,
      method: o.method ?? 'GET',
      agent: false,
      localAddress: o.localAddress,
      headers: { ...o.headers, ...(o.auth === undefined ? {} : { authorization: o.auth }) },
      ...(tls ? { ca: o.ca, cert: o.cert, key: o.key } : {}),
    };
    const req = (tls ? https : http).request(opts, (res) => {
      let body = '';
      const peer = tls ? (res.socket as TLSSocket).getPeerCertificate().fingerprint256 : undefined;
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body, ms: performance.now() - t0, peer }),
      );
    });
    req.setTimeout(o.timeoutMs ?? 30_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}
