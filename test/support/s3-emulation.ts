/**
 * The parts of the S3 API the test store (s3rver 3) lacks, served by the fault proxy in front of it.
 * Everything else, the objects and their bytes included, stays s3rver's.
 *
 * - Paged ListObjectsV2. s3rver fails any listing that is truncated (more than 1,000 keys): it builds
 *   its continuation token with DES, which OpenSSL 3 refuses, and answers 500. Its ListObjects (v1)
 *   with a marker pages correctly, so a ListObjectsV2 is answered from one v1 page of the store,
 *   with a continuation token of the proxy's own (opaque to the client, as S3's are).
 * - Multipart uploads that can be listed and aborted. s3rver answers ListMultipartUploads with 501
 *   and AbortMultipartUpload with 405. The proxy learns each upload from the store's answer to
 *   CreateMultipartUpload, forgets it on a completed CompleteMultipartUpload, and answers
 *   ListMultipartUploads and AbortMultipartUpload from that record, as S3 would; a part or a
 *   completion sent to an aborted upload gets 404 NoSuchUpload, as from S3.
 *
 * The requests it sends to the store are unsigned: point the proxy at s3rver, not at a store that
 * checks signatures.
 */
import { request as httpRequest, type Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import { s3ErrorXml, type ProxiedRequest } from './fault-proxy.js';

export interface OpenUpload {
  bucket: string;
  key: string;
  uploadId: string;
  initiated: Date;
}

export interface S3Emulation {
  /** Serve ListObjectsV2 in pages of `pageSize` keys (S3's own: 1,000). 0: pass to the store. */
  pageListings(pageSize: number): void;
  /** Track multipart uploads and answer ListMultipartUploads and AbortMultipartUpload. */
  trackUploads(on: boolean): void;
  /** The uploads created and neither completed nor aborted (while tracking). */
  openUploads(): OpenUpload[];
  /** Answers the request if it is one the emulation serves; returns the status sent, or undefined. */
  answer(info: ProxiedRequest, req: IncomingMessage, res: ServerResponse): Promise<number> | undefined;
  /** Sees the store's answer to a forwarded request (its body as it streams past). */
  observe(info: ProxiedRequest, upRes: IncomingMessage): void;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const unesc = (s: string) =>
  s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
const tag = (xml: string, name: string) => new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(xml)?.[1];
const token = (lastKey: string) => `emulated-${Buffer.from(lastKey).toString('base64url')}`;
const untoken = (t: string) =>
  t.startsWith('emulated-') ? Buffer.from(t.slice('emulated-'.length), 'base64url').toString() : undefined;

function send(res: ServerResponse, status: number, body: string): number {
  res.writeHead(status, {
    'content-type': 'application/xml',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
  return status;
}

export function createS3Emulation(target: URL, agent: Agent): S3Emulation {
  let pageSize = 0;
  let tracking = false;
  const open = new Map<string, OpenUpload>();
  const aborted = new Set<string>();

  const storeGet = (path: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = httpRequest(
        { hostname: target.hostname, port: target.port, method: 'GET', path, agent },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 502, body }));
          res.on('error', reject);
        },
      );
      r.on('error', reject);
      r.end();
    });

  async function listPage(info: ProxiedRequest, res: ServerResponse): Promise<number> {
    const q = info.query;
    const prefix = q.get('prefix') ?? '';
    const given = q.get('continuation-token');
    const after = given === null ? (q.get('start-after') ?? '') : untoken(given);
    if (after === undefined)
      return send(res, 400, s3ErrorXml('InvalidArgument', 'The continuation token provided is incorrect'));
    const max = Math.min(pageSize, Number(q.get('max-keys') ?? pageSize));
    const v1 = new URLSearchParams({ prefix, marker: after, 'max-keys': String(max) });
    const store = await storeGet(`/${encodeURIComponent(info.bucket!)}?${v1}`);
    if (store.status !== 200) return send(res, store.status, store.body);
    const contents = [...store.body.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)].map((m) => m[1]!);
    const truncated = tag(store.body, 'IsTruncated') === 'true';
    const last = contents.length ? unesc(tag(contents.at(-1)!, 'Key') ?? '') : '';
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
      `<Name>${esc(info.bucket!)}</Name><Prefix>${esc(prefix)}</Prefix>` +
      `<KeyCount>${contents.length}</KeyCount><MaxKeys>${max}</MaxKeys>` +
      `<IsTruncated>${truncated}</IsTruncated>` +
      (given === null ? '' : `<ContinuationToken>${esc(given)}</ContinuationToken>`) +
      (truncated ? `<NextContinuationToken>${esc(token(last))}</NextContinuationToken>` : '') +
      contents.map((c) => `<Contents>${c}</Contents>`).join('') +
      '</ListBucketResult>';
    return send(res, 200, body);
  }

  function listUploads(info: ProxiedRequest, res: ServerResponse): number {
    const prefix = info.query.get('prefix') ?? '';
    const uploads = [...open.values()].filter((u) => u.bucket === info.bucket && u.key.startsWith(prefix));
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
      `<Bucket>${esc(info.bucket!)}</Bucket><Prefix>${esc(prefix)}</Prefix><MaxUploads>1000</MaxUploads>` +
      '<IsTruncated>false</IsTruncated>' +
      uploads
        .map(
          (u) =>
            `<Upload><Key>${esc(u.key)}</Key><UploadId>${esc(u.uploadId)}</UploadId>` +
            `<Initiated>${u.initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`,
        )
        .join('') +
      '</ListMultipartUploadsResult>';
    return send(res, 200, body);
  }

  const noSuchUpload = (res: ServerResponse) =>
    send(
      res,
      404,
      s3ErrorXml(
        'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      ),
    );

  /** The body read to its end first, as S3 does before it answers. */
  const drained = (req: IncomingMessage) =>
    new Promise<void>((resolve) => {
      if (req.complete) return resolve();
      req.on('end', resolve);
      req.on('close', resolve);
      req.resume();
    });

  return {
    pageListings(n) {
      pageSize = n;
    },
    trackUploads(on) {
      tracking = on;
      if (!on) {
        open.clear();
        aborted.clear();
      }
    },
    openUploads: () => [...open.values()],
    answer(info, req, res) {
      if (pageSize > 0 && info.kind === 'ListObjectsV2') return drained(req).then(() => listPage(info, res));
      if (!tracking) return undefined;
      if (info.kind === 'ListMultipartUploads') return drained(req).then(() => listUploads(info, res));
      if (info.kind === 'AbortMultipartUpload') {
        return drained(req).then(() => {
          const id = info.uploadId!;
          if (!open.delete(id)) return noSuchUpload(res);
          aborted.add(id);
          res.writeHead(204).end();
          return 204;
        });
      }
      if (
        (info.kind === 'UploadPart' || info.kind === 'CompleteMultipartUpload') &&
        aborted.has(info.uploadId!)
      )
        return drained(req).then(() => noSuchUpload(res));
      return undefined;
    },
    observe(info, upRes) {
      if (!tracking || upRes.statusCode !== 200) return;
      if (info.kind === 'CompleteMultipartUpload') {
        open.delete(info.uploadId!);
        return;
      }
      if (info.kind !== 'CreateMultipartUpload') return;
      let body = '';
      upRes.on('data', (c: Buffer) => (body += c.toString()));
      upRes.on('end', () => {
        const uploadId = tag(body, 'UploadId');
        if (uploadId)
          open.set(uploadId, { bucket: info.bucket!, key: info.key!, uploadId, initiated: new Date() });
      });
    },
  };
}
