/**
 * S3 Object Lock, EMULATED for the fault proxy: the test store (s3rver) implements none of it. When
 * on, the proxy
 *   - records the lock headers (x-amz-object-lock-mode, x-amz-object-lock-retain-until-date) and the
 *     integrity headers of every upload (PutObject, CreateMultipartUpload, UploadPart);
 *   - refuses DeleteObject (403 AccessDenied) and each key of DeleteObjects (a per-key AccessDenied
 *     error, the others deleted) while the key's retain-until date is after the proxy's notion of now
 *     (settable, so a test moves time without sleeping), as S3 refuses to delete a locked version;
 *   - adds the lock headers to HeadObject answers of a locked key, as S3 does;
 *   - answers GetObjectLockConfiguration (GET /<bucket>?object-lock) with the bucket's lock state.
 * This is what AWS S3 does for a version-specific delete; a delete by key alone in a versioned bucket
 * there adds a delete marker instead (the locked version stays, hidden): the README says so.
 */
import { request as httpRequest, type Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import type { ProxiedRequest } from './fault-proxy.js';

export interface LockedUpload {
  kind: 'PutObject' | 'CreateMultipartUpload' | 'UploadPart';
  bucket: string;
  key: string;
  /** x-amz-object-lock-mode, as sent (GOVERNANCE, COMPLIANCE). */
  mode: string | undefined;
  /** x-amz-object-lock-retain-until-date, parsed. */
  until: Date | undefined;
  headers: IncomingMessage['headers'];
}

export interface ObjectLockEmulation {
  enable(on: boolean): void;
  /** The proxy's notion of now for lock expiry (undefined: the real clock). */
  setNow(ms: number | undefined): void;
  /** Whether GetObjectLockConfiguration says the bucket has Object Lock enabled. */
  setBucketEnabled(on: boolean): void;
  uploads(): LockedUpload[];
  /** Answers the request itself (a refused delete, DeleteObjects, the bucket's configuration), or undefined. */
  answer(info: ProxiedRequest, req: IncomingMessage, res: ServerResponse): Promise<number> | undefined;
  /** Header pairs to add to a forwarded answer (HeadObject of a locked key). */
  extraHeaders(info: ProxiedRequest): string[];
  /** Records an upload's headers (called for every request while on). */
  observe(info: ProxiedRequest): void;
}

const DENIED = 'Access Denied because object protected by object lock.';
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const unesc = (s: string) =>
  s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');

export function createObjectLockEmulation(target: URL, agent: Agent): ObjectLockEmulation {
  let on = false;
  let bucketEnabled = true;
  let nowOverride: number | undefined;
  const recorded: LockedUpload[] = [];
  /** bucket/key -> the latest lock sent for it. */
  const locks = new Map<string, { until: Date; mode: string }>();
  const now = () => nowOverride ?? Date.now();
  const lockedUntil = (bucket: string, key: string): Date | undefined => {
    const until = locks.get(`${bucket}/${key}`)?.until;
    return until && until.getTime() > now() ? until : undefined;
  };

  const upstreamDelete = (bucket: string, key: string) =>
    new Promise<boolean>((resolve) => {
      const r = httpRequest(
        {
          hostname: target.hostname,
          port: target.port,
          method: 'DELETE',
          path: `/${encodeURIComponent(bucket)}/${key.split('/').map(encodeURIComponent).join('/')}`,
          agent,
        },
        (up) => {
          up.resume();
          resolve((up.statusCode ?? 500) < 300);
        },
      );
      r.on('error', () => resolve(false));
      r.end();
    });

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });

  const send = (res: ServerResponse, status: number, body: string): number => {
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return status;
  };

  const deleteObjects = async (bucket: string, req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req);
    const quiet = /<Quiet>\s*true\s*<\/Quiet>/i.test(body);
    const keys = [...body.matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((m) => unesc(m[1]!));
    let out = '<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult>';
    for (const key of keys) {
      if (lockedUntil(bucket, key)) {
        out += `<Error><Key>${esc(key)}</Key><Code>AccessDenied</Code><Message>${DENIED}</Message></Error>`;
        continue;
      }
      if (await upstreamDelete(bucket, key)) {
        if (!quiet) out += `<Deleted><Key>${esc(key)}</Key></Deleted>`;
      } else
        out += `<Error><Key>${esc(key)}</Key><Code>InternalError</Code><Message>emulated delete failed</Message></Error>`;
    }
    return send(res, 200, `${out}</DeleteResult>`);
  };

  return {
    enable(v) {
      on = v;
    },
    setNow(ms) {
      nowOverride = ms;
    },
    setBucketEnabled(v) {
      bucketEnabled = v;
    },
    uploads: () => recorded,
    observe(info) {
      if (!on || !info.bucket || !info.key) return;
      if (info.kind !== 'PutObject' && info.kind !== 'CreateMultipartUpload' && info.kind !== 'UploadPart')
        return;
      const mode = info.headers['x-amz-object-lock-mode'] as string | undefined;
      const raw = info.headers['x-amz-object-lock-retain-until-date'] as string | undefined;
      const until = raw ? new Date(raw) : undefined;
      recorded.push({
        kind: info.kind,
        bucket: info.bucket,
        key: info.key,
        mode,
        until,
        headers: info.headers,
      });
      if (until && info.kind !== 'UploadPart')
        locks.set(`${info.bucket}/${info.key}`, { until, mode: mode ?? 'GOVERNANCE' });
    },
    answer(info, req, res) {
      if (!on || !info.bucket) return undefined;
      if (info.method === 'GET' && !info.key && info.query.has('object-lock')) {
        return Promise.resolve(
          bucketEnabled
            ? send(
                res,
                200,
                '<?xml version="1.0" encoding="UTF-8"?>\n<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>',
              )
            : send(
                res,
                404,
                `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ObjectLockConfigurationNotFoundError</Code><Message>Object Lock configuration does not exist for this bucket</Message><BucketName>${esc(info.bucket)}</BucketName></Error>`,
              ),
        );
      }
      if (info.kind === 'DeleteObjects') return deleteObjects(info.bucket, req, res);
      if (info.kind === 'DeleteObject' && info.key && lockedUntil(info.bucket, info.key)) {
        req.resume();
        return Promise.resolve(
          send(
            res,
            403,
            `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>${DENIED}</Message></Error>`,
          ),
        );
      }
      return undefined;
    },
    extraHeaders(info) {
      if (!on || info.kind !== 'HeadObject' || !info.bucket || !info.key) return [];
      const lock = locks.get(`${info.bucket}/${info.key}`);
      if (!lock) return [];
      return [
        'x-amz-object-lock-mode',
        lock.mode,
        'x-amz-object-lock-retain-until-date',
        lock.until.toISOString(),
      ];
    },
  };
}
