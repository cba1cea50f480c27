/**
 * A loopback proxy in front of s3rver that checks AWS Signature Version 4 with a known key pair,
 * as AWS and MinIO do. s3rver 3 looks up the access key but does not check v4 signatures, so without
 * this a test could not tell whether the secret access key was used at all: here a request signed
 * with any other secret gets 403 SignatureDoesNotMatch, and an unknown key 403 InvalidAccessKeyId.
 * Header-signed requests only (what the SDK sends); the payload hash is taken from
 * x-amz-content-sha256, as the signer put it there (or the STREAMING-... marker of an aws-chunked body).
 * Every request that passed is kept with its headers, so a test can see what the SDK sent.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { classify, s3ErrorXml, type RequestKind } from './fault-proxy.js';

export interface SeenRequest {
  method: string;
  url: string;
  kind: RequestKind;
  headers: IncomingHttpHeaders;
}

export interface SigV4Proxy {
  /** http://127.0.0.1:<port>, to use as the S3 endpoint. */
  readonly url: string;
  /** Requests that passed the check, and those refused (by error code). */
  readonly stats: { accepted: number; refused: Record<string, number> };
  /** The requests that passed the check, in arrival order. */
  readonly requests: readonly SeenRequest[];
  /** Forgets the requests seen. */
  clearLog(): void;
  close(): Promise<void>;
}

const hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
/** RFC 3986 encoding, as the SDK's signer escapes query keys and values. */
const escapeUri = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** The v4 signature of a request, computed with `secret` over the headers the client said it signed. */
function sigV4Signature(
  req: Pick<IncomingMessage, 'method' | 'url' | 'headers'>,
  secret: string,
): { accessKeyId: string; provided: string; expected: string } | undefined {
  const auth = String(req.headers.authorization ?? '');
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]+)$/.exec(
      auth,
    );
  if (!m) return undefined;
  const [, accessKeyId, day, region, service, signedHeaders, provided] = m as unknown as string[];
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const query = (q < 0 ? '' : url.slice(q + 1))
    .split('&')
    .filter(Boolean)
    .map((kv) => {
      const i = kv.indexOf('=');
      const k = decodeURIComponent(i < 0 ? kv : kv.slice(0, i));
      const v = i < 0 ? '' : decodeURIComponent(kv.slice(i + 1));
      return [escapeUri(k), escapeUri(v)] as const;
    })
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const names = signedHeaders!.split(';');
  const headers = names
    .map((n) => {
      const v = req.headers[n];
      const value = Array.isArray(v) ? v.join(',') : String(v ?? '');
      return `${n}:${value.trim().replace(/\s+/g, ' ')}\n`;
    })
    .join('');
  const payloadHash = String(req.headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD');
  const canonical = [req.method, path, query, headers, signedHeaders, payloadHash].join('\n');
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, hex(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, day!), region!), service!), 'aws4_request');
  return { accessKeyId: accessKeyId!, provided: provided!, expected: hmac(key, toSign).toString('hex') };
}

export async function startSigV4Proxy(opts: {
  target: string;
  accessKeyId: string;
  secretAccessKey: string;
}): Promise<SigV4Proxy> {
  const target = new URL(opts.target);
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  const stats = { accepted: 0, refused: {} as Record<string, number> };
  const requests: SeenRequest[] = [];
  const refuse = (res: import('node:http').ServerResponse, code: string, message: string) => {
    stats.refused[code] = (stats.refused[code] ?? 0) + 1;
    res.writeHead(403, { 'content-type': 'application/xml' });
    res.end(s3ErrorXml(code, message));
  };
  const server = createServer((req, res) => {
    const sig = sigV4Signature(req, opts.secretAccessKey);
    if (!sig) {
      req.resume();
      return refuse(res, 'AccessDenied', 'Only header-signed AWS4-HMAC-SHA256 requests are accepted');
    }
    if (sig.accessKeyId !== opts.accessKeyId) {
      req.resume();
      return refuse(
        res,
        'InvalidAccessKeyId',
        'The AWS Access Key Id you provided does not exist in our records.',
      );
    }
    const a = Buffer.from(sig.provided);
    const b = Buffer.from(sig.expected);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      req.resume();
      return refuse(
        res,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      );
    }
    stats.accepted++;
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    requests.push({ method, url, kind: classify(method, url).kind, headers: { ...req.headers } });
    const up = httpRequest(
      {
        hostname: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent,
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, upRes.rawHeaders);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    requests,
    clearLog: () => void (requests.length = 0),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}
