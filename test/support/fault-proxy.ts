/**
 * A loopback HTTP proxy in front of an S3 endpoint that injects faults, switchable at run time:
 *   pass()                       forward every request as is (streaming both ways, headers unchanged);
 *   status(code, { ... })        answer with an S3-style XML error (500 InternalError, 503 SlowDown,
 *                                403 AccessDenied...) for the next `times` matching requests, or forever;
 *   reset({ afterBytes })        read that much of the request body, then destroy the client socket;
 *   delay(ms)                    hold the request that long before forwarding it (a stalled store);
 *   down() / up()                close the port (connections refused, as a store that is down) and
 *                                listen again on the same port.
 * A `match` predicate limits a fault to a kind of request (UploadPart, CreateMultipartUpload, ...);
 * requests that do not match, and those after `times` ran out, pass. Every request is counted and
 * logged by kind, so a test can see the retries.
 *
 * It can also serve what s3rver lacks (s3-emulation.ts): paged ListObjectsV2 past 1,000 keys
 * (pageListings), and ListMultipartUploads with AbortMultipartUpload (trackUploads); and S3 Object
 * Lock (s3-object-lock.ts, objectLock.enable): lock headers recorded, locked deletes refused.
 *
 * The Host header is forwarded unchanged: SigV4 signs it, so a store that checks signatures (MinIO,
 * AWS) accepts the proxied request only if it sees the Host the client signed. s3rver does not check
 * signatures and serves path-style requests whatever the Host; backup-s3-faults.test.ts checks both
 * that the Host arrives unchanged (against an echo server) and that signed requests pass to s3rver.
 */
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createS3Emulation, type OpenUpload } from './s3-emulation.js';
import { createObjectLockEmulation, type ObjectLockEmulation } from './s3-object-lock.js';

export type RequestKind =
  | 'ListBuckets'
  | 'CreateBucket'
  | 'DeleteBucket'
  | 'HeadBucket'
  | 'ListObjectsV2'
  | 'ListObjects'
  | 'ListMultipartUploads'
  | 'DeleteObjects'
  | 'CreateMultipartUpload'
  | 'UploadPart'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'ListParts'
  | 'PutObject'
  | 'GetObject'
  | 'HeadObject'
  | 'DeleteObject'
  | 'Other';

export interface ProxiedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  path: string;
  query: URLSearchParams;
  kind: RequestKind;
  bucket: string | undefined;
  key: string | undefined;
  partNumber: number | undefined;
  uploadId: string | undefined;
  headers: IncomingMessage['headers'];
}

export type Match = (r: ProxiedRequest) => boolean;

export interface RequestRecord {
  method: string;
  url: string;
  kind: RequestKind;
  partNumber: number | undefined;
  uploadId: string | undefined;
  /** The SDK's attempt number from its amz-sdk-request header ("attempt=2; max=6"), if sent. */
  attempt: number | undefined;
  /** performance.now() at arrival. */
  at: number;
  /** The fault applied, if any ('status 500', 'reset', 'delay 5000'). */
  fault: string | undefined;
  /** The status code sent to the client (undefined: no answer, e.g. the socket was reset). */
  status: number | undefined;
  /** The If-None-Match header the request carried, if any. */
  ifNoneMatch: string | undefined;
  /** Answered by the proxy's emulation of what s3rver lacks, not by the store. */
  emulated: boolean;
}

interface FaultOptions {
  /** How many matching requests get the fault; then the proxy passes again. Default: forever. */
  times?: number;
  match?: Match;
}

export interface StatusFaultOptions extends FaultOptions {
  /** S3 error code in the XML body; default from the status (500 InternalError, 503 SlowDown...). */
  code?: string;
  message?: string;
  /** The whole body, instead of the generated XML. */
  body?: string;
}

export interface ResetFaultOptions extends FaultOptions {
  /** Request-body bytes read before the socket is destroyed. Default 0 (at once). */
  afterBytes?: number;
}

type Fault =
  | { type: 'status'; status: number; body: string; left: number; match: Match | undefined }
  | { type: 'reset'; afterBytes: number; left: number; match: Match | undefined }
  | { type: 'delay'; ms: number; left: number; match: Match | undefined };

const DEFAULT_ERRORS: Record<number, { code: string; message: string }> = {
  400: { code: 'BadRequest', message: 'Bad Request' },
  403: { code: 'AccessDenied', message: 'Access Denied' },
  404: { code: 'NoSuchKey', message: 'The specified key does not exist.' },
  500: { code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
  502: { code: 'BadGateway', message: 'Bad Gateway' },
  503: { code: 'SlowDown', message: 'Please reduce your request rate.' },
};

/** An S3 error document, as S3 answers (HEAD answers carry no body). */
export function s3ErrorXml(code: string, message: string, resource = '/'): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${esc(code)}</Code><Message>${esc(message)}</Message>` +
    `<Resource>${esc(resource)}</Resource><RequestId>${randomBytes(8).toString('hex').toUpperCase()}</RequestId></Error>`
  );
}

/** Sorts a path-style S3 request into the API operation it is. */
export function classify(method: string, url: string): Omit<ProxiedRequest, 'headers'> {
  const u = new URL(url, 'http://proxy.invalid');
  const q = u.searchParams;
  const segments = u.pathname.split('/').slice(1);
  const bucket = segments[0] ? decodeURIComponent(segments[0]) : undefined;
  const rest = segments.slice(1).join('/');
  const key = rest ? decodeURIComponent(rest) : undefined;
  const m = method.toUpperCase();
  let kind: RequestKind = 'Other';
  if (!bucket) kind = m === 'GET' ? 'ListBuckets' : 'Other';
  else if (!key) {
    if (m === 'HEAD') kind = 'HeadBucket';
    else if (m === 'GET')
      kind = q.has('uploads')
        ? 'ListMultipartUploads'
        : q.get('list-type') === '2'
          ? 'ListObjectsV2'
          : 'ListObjects';
    else if (m === 'PUT' && [...q.keys()].length === 0) kind = 'CreateBucket';
    else if (m === 'DELETE' && [...q.keys()].length === 0) kind = 'DeleteBucket';
    else if (m === 'POST' && q.has('delete')) kind = 'DeleteObjects';
  } else if (m === 'PUT') kind = q.has('partNumber') && q.has('uploadId') ? 'UploadPart' : 'PutObject';
  else if (m === 'POST')
    kind = q.has('uploads')
      ? 'CreateMultipartUpload'
      : q.has('uploadId')
        ? 'CompleteMultipartUpload'
        : 'Other';
  else if (m === 'DELETE') kind = q.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
  else if (m === 'GET') kind = q.has('uploadId') ? 'ListParts' : 'GetObject';
  else if (m === 'HEAD') kind = 'HeadObject';
  const partNumber = q.has('partNumber') ? Number(q.get('partNumber')) : undefined;
  return {
    method: m,
    url,
    path: u.pathname,
    query: q,
    kind,
    bucket,
    key,
    partNumber,
    uploadId: q.get('uploadId') ?? undefined,
  };
}

function attemptOf(header: string | string[] | undefined): number | undefined {
  const m = /attempt=(\d+)/.exec(String(header ?? ''));
  return m ? Number(m[1]) : undefined;
}

/**
 * Whether a request carries the AWS SDK's integrity checksums: x-amz-sdk-checksum-algorithm,
 * x-amz-checksum-algorithm or an x-amz-checksum-* value, or an aws-chunked body with an x-amz-trailer
 * (x-amz-checksum-mode, a download asking for the stored checksum, is not one).
 */
export function carriesChecksum(headers: IncomingMessage['headers']): boolean {
  return (
    /aws-chunked/i.test(String(headers['content-encoding'] ?? '')) ||
    Object.keys(headers).some(
      (h) =>
        h === 'x-amz-sdk-checksum-algorithm' ||
        h === 'x-amz-trailer' ||
        (h.startsWith('x-amz-checksum-') && h !== 'x-amz-checksum-mode'),
    )
  );
}

/** Ready-made predicates for `match`. */
export const on = {
  kind:
    (...kinds: RequestKind[]): Match =>
    (r) =>
      kinds.includes(r.kind),
  method:
    (...methods: string[]): Match =>
    (r) =>
      methods.includes(r.method),
  /** Requests carrying the AWS SDK's integrity checksums (carriesChecksum). */
  checksummed: (): Match => (r) => carriesChecksum(r.headers),
  /** Everything except the given kinds. */
  not:
    (m: Match): Match =>
    (r) =>
      !m(r),
};

export interface FaultProxy {
  /** http://127.0.0.1:<port>, to use as the S3 endpoint. */
  readonly url: string;
  /** Every request seen, in arrival order. */
  readonly requests: readonly RequestRecord[];
  /** Forward everything from now on (clears the fault). */
  pass(): void;
  status(code: number, opts?: StatusFaultOptions): void;
  reset(opts?: ResetFaultOptions): void;
  delay(ms: number, opts?: FaultOptions): void;
  /** Requests seen of one kind (all kinds when omitted). */
  count(kind?: RequestKind): number;
  /** Requests of one kind that got a fault (all kinds when omitted). */
  faulted(kind?: RequestKind): number;
  /** Counts of requests seen, by kind. */
  counts(): Partial<Record<RequestKind, number>>;
  /** How many matching requests the current fault still applies to (Infinity: forever; 0: passing). */
  faultsLeft(): number;
  /** Forgets the request log and counters. */
  clearLog(): void;
  /**
   * Enforce `If-None-Match: *` on PutObject and CompleteMultipartUpload, as AWS S3 and MinIO do (the
   * test store, s3rver, ignores the header): a write to a key that exists gets 412 PreconditionFailed.
   */
  enforceIfNoneMatch(on: boolean): void;
  /**
   * Serve ListObjectsV2 in pages of `pageSize` keys (default 1,000, as S3) from the store's v1
   * listing, for s3rver, which fails past 1,000 keys; 0 passes listings to the store again.
   */
  pageListings(pageSize?: number): void;
  /**
   * Track multipart uploads and answer ListMultipartUploads and AbortMultipartUpload (s3rver
   * implements neither); parts sent to an aborted upload get 404 NoSuchUpload.
   */
  trackUploads(on: boolean): void;
  /** The multipart uploads created and neither completed nor aborted, while tracking. */
  openUploads(): OpenUpload[];
  /** S3 Object Lock, emulated (s3-object-lock.ts): lock headers recorded, deletes of locked keys refused. */
  readonly objectLock: Omit<ObjectLockEmulation, 'answer' | 'extraHeaders' | 'observe'>;
  /** Stops listening and drops every open connection: the port refuses connections (ECONNREFUSED). */
  down(): Promise<void>;
  /** Listens again on the same port after down(). */
  up(): Promise<void>;
  close(): Promise<void>;
}

export interface FaultProxyOptions {
  /** Base URL of the real store, e.g. the s3rver endpoint. */
  target: string;
  /** Rewrite the Host header to the target's (default false: forward it unchanged). */
  rewriteHost?: boolean;
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(opts.target);
  if (target.protocol !== 'http:') throw new Error(`fault proxy: only http targets, got ${opts.target}`);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const records: RequestRecord[] = [];
  let fault: Fault | undefined;
  let enforceIfNoneMatch = false;
  const emulation = createS3Emulation(target, agent);
  const objectLock = createObjectLockEmulation(target, agent);

  /** Whether the upstream store holds `key` (a HEAD of it). */
  const exists = (bucket: string, key: string) =>
    new Promise<boolean>((resolve) => {
      const head = httpRequest(
        {
          hostname: target.hostname,
          port: target.port,
          method: 'HEAD',
          path: `/${encodeURIComponent(bucket)}/${key.split('/').map(encodeURIComponent).join('/')}`,
          agent,
        },
        (r) => {
          r.resume();
          resolve(r.statusCode === 200);
        },
      );
      head.on('error', () => resolve(false));
      head.end();
    });

  /** The fault for this request, if any, consuming one of its `times`. */
  const take = (r: ProxiedRequest): Fault | undefined => {
    const f = fault;
    if (!f || f.left <= 0) return undefined;
    if (f.match && !f.match(r)) return undefined;
    f.left -= 1;
    if (f.left <= 0) fault = undefined;
    return f;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, rec: RequestRecord, info: ProxiedRequest) => {
    const headers = { ...req.headers };
    if (opts.rewriteHost) headers.host = target.host;
    const up = httpRequest(
      {
        protocol: target.protocol,
        hostname: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers,
        agent,
      },
      (upRes) => {
        rec.status = upRes.statusCode;
        emulation.observe(info, upRes);
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, [
          ...upRes.rawHeaders,
          ...objectLock.extraHeaders(info),
        ]);
        upRes.pipe(res);
        upRes.on('error', () => res.destroy());
        res.on('close', () => {
          if (!res.writableFinished) upRes.destroy();
        });
      },
    );
    up.on('error', (err) => {
      if (!res.headersSent) {
        rec.status = 502;
        res.writeHead(502, { 'content-type': 'application/xml' });
        res.end(req.method === 'HEAD' ? undefined : s3ErrorXml('BadGateway', `fault proxy: ${err.message}`));
      } else res.destroy();
    });
    // The client went away before the answer was complete: stop the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
    req.on('error', () => up.destroy());
  };

  const drain = (req: IncomingMessage) =>
    new Promise<void>((resolve) => {
      if (req.complete) return resolve();
      req.on('end', resolve);
      req.on('close', resolve);
      req.on('error', () => resolve());
      req.resume();
    });

  const server = createServer((req, res) => {
    const info: ProxiedRequest = { ...classify(req.method ?? 'GET', req.url ?? '/'), headers: req.headers };
    const rec: RequestRecord = {
      method: info.method,
      url: info.url,
      kind: info.kind,
      partNumber: info.partNumber,
      uploadId: info.uploadId,
      attempt: attemptOf(req.headers['amz-sdk-request']),
      at: performance.now(),
      fault: undefined,
      status: undefined,
      ifNoneMatch: req.headers['if-none-match'],
      emulated: false,
    };
    records.push(rec);
    const f = take(info);
    if (!f) objectLock.observe(info);
    const emulated = f ? undefined : (objectLock.answer(info, req, res) ?? emulation.answer(info, req, res));
    if (emulated) {
      rec.emulated = true;
      emulated.then(
        (status) => (rec.status = status),
        () => res.destroy(),
      );
      return;
    }
    const conditional =
      enforceIfNoneMatch &&
      rec.ifNoneMatch === '*' &&
      (info.kind === 'PutObject' || info.kind === 'CompleteMultipartUpload') &&
      info.bucket !== undefined &&
      info.key !== undefined;
    if (!f && conditional) {
      req.pause();
      void exists(info.bucket!, info.key!).then((taken) => {
        if (!taken) return forward(req, res, rec, info);
        rec.fault = 'precondition';
        void drain(req).then(() => {
          if (res.destroyed) return;
          rec.status = 412;
          const body = s3ErrorXml(
            'PreconditionFailed',
            'At least one of the pre-conditions you specified did not hold',
            `/${info.key}`,
          );
          res.writeHead(412, {
            'content-type': 'application/xml',
            'content-length': Buffer.byteLength(body),
          });
          res.end(body);
        });
      });
      return;
    }
    if (!f) return forward(req, res, rec, info);

    if (f.type === 'status') {
      rec.fault = `status ${f.status}`;
      // Read the whole body first (as S3 does without 100-continue), then answer.
      void drain(req).then(() => {
        if (res.destroyed) return;
        rec.status = f.status;
        const body = info.method === 'HEAD' ? '' : f.body;
        res.writeHead(f.status, {
          'content-type': 'application/xml',
          'content-length': Buffer.byteLength(body),
          'x-amz-request-id': randomBytes(8).toString('hex').toUpperCase(),
        });
        res.end(body);
      });
      return;
    }

    if (f.type === 'reset') {
      rec.fault = 'reset';
      const socket = req.socket;
      if (f.afterBytes <= 0) return void socket.destroy();
      let read = 0;
      req.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= f.afterBytes) socket.destroy();
      });
      // A body shorter than afterBytes: reset at its end, before any answer.
      req.on('end', () => socket.destroy());
      return;
    }

    rec.fault = `delay ${f.ms}`;
    req.pause(); // the body waits in the socket: the client sees a store that stopped answering
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (req.destroyed || res.destroyed) return;
      forward(req, res, rec, info);
    }, f.ms);
    timers.add(timer);
    res.on('close', () => {
      clearTimeout(timer);
      timers.delete(timer);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  /** Stops accepting and drops every open connection; resolves when the listener is closed. */
  const shut = () => {
    const closed = new Promise<void>((resolve) =>
      server.listening ? server.close(() => resolve()) : resolve(),
    );
    for (const s of sockets) s.destroy();
    return closed;
  };
  await listen(0);
  const { port } = server.address() as AddressInfo;

  const times = (t: number | undefined) => (t === undefined ? Infinity : t);
  const count = (which: 'all' | 'faulted', kind?: RequestKind) =>
    records.filter((r) => (kind === undefined || r.kind === kind) && (which === 'all' || r.fault)).length;

  return {
    url: `http://127.0.0.1:${port}`,
    requests: records,
    pass() {
      fault = undefined;
    },
    status(code, o = {}) {
      const d = DEFAULT_ERRORS[code] ?? { code: 'Error', message: `HTTP ${code}` };
      const body = o.body ?? s3ErrorXml(o.code ?? d.code, o.message ?? d.message);
      fault = { type: 'status', status: code, body, left: times(o.times), match: o.match };
    },
    reset(o = {}) {
      fault = { type: 'reset', afterBytes: o.afterBytes ?? 0, left: times(o.times), match: o.match };
    },
    delay(ms, o = {}) {
      fault = { type: 'delay', ms, left: times(o.times), match: o.match };
    },
    count: (kind) => count('all', kind),
    faulted: (kind) => count('faulted', kind),
    counts() {
      const out: Partial<Record<RequestKind, number>> = {};
      for (const r of records) out[r.kind] = (out[r.kind] ?? 0) + 1;
      return out;
    },
    faultsLeft: () => fault?.left ?? 0,
    clearLog() {
      records.length = 0;
    },
    enforceIfNoneMatch(on) {
      enforceIfNoneMatch = on;
    },
    pageListings(pageSize = 1000) {
      emulation.pageListings(pageSize);
    },
    trackUploads(on) {
      emulation.trackUploads(on);
    },
    openUploads: () => emulation.openUploads(),
    objectLock,
    down: shut,
    async up() {
      if (!server.listening) await listen(port);
    },
    async close() {
      fault = undefined;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const closed = shut();
      agent.destroy();
      await closed;
    },
  };
}
