/**
 * S3 (or any S3-compatible store) storage. Credentials come from the SDK's default chain (env,
 * shared config, IRSA web identity, instance role); static keys are never required. Uploads are
 * streaming multipart uploads (lib-storage); on failure the multipart upload is aborted, so nothing
 * appears under the key, and the original cause is reported.
 */
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  type ChecksumAlgorithm,
  type ObjectLockMode,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import { OperatorError } from '../../core/errors.js';
import { EXIT } from '../../core/exit-codes.js';
import { defaultS3Checksum } from '../../config/fields.js';
import { checksumHint, namesChecksum, sdkChecksumOptions, type S3ChecksumMode } from './s3-checksum.js';
import {
  ClockReading,
  ObjectExistsError,
  type DeleteOutcome,
  type LockedObject,
  type Storage,
  type StoredObject,
} from './storage.js';

export interface S3Settings {
  bucket: string;
  prefix: string;
  region?: string | undefined;
  endpoint?: string | undefined;
  forcePathStyle: boolean;
  /** S3_CHECKSUM; unset: when_required with an endpoint, when_supported without. */
  checksum?: S3ChecksumMode | undefined;
  sse?: 'AES256' | 'aws:kms' | undefined;
  kmsKeyId?: string | undefined;
  storageClass?: string | undefined;
  partSize?: number | undefined;
  maxAttempts: number;
  /** Per-request time limit; a stalled store fails the request, which is then retried. */
  requestTimeoutMs?: number;
  /** S3_OBJECT_LOCK and S3_OBJECT_LOCK_DAYS: every upload is locked this long. */
  objectLock?: { mode: 'off' | 'governance' | 'compliance'; days: number } | undefined;
}

export const MIN_PART = 5 * 1024 ** 2;
const DEFAULT_PART = 16 * 1024 ** 2;
export const MAX_PARTS = 10_000;

/**
 * Part size for a dump: the smallest that fits 1.5x the database's size on disk in 10,000 parts (a
 * compressed dump is far smaller than the database, indexes and all), at least S3's 5 MiB minimum.
 * A 2 GB database gets 5 MiB parts, 100 GB gets 16 MiB, 1 TB gets 154 MiB. When the size is
 * unknown, 16 MiB parts (160 GiB; lib-storage's default 5 MiB stops near 48 GiB).
 */
export function choosePartSize(expectedBytes: number | undefined, configured?: number): number {
  if (configured) return configured;
  if (!expectedBytes) return DEFAULT_PART;
  const mib = 1024 ** 2;
  return Math.max(MIN_PART, Math.ceil((expectedBytes * 1.5) / MAX_PARTS / mib) * mib);
}

/** lib-storage buffers queueSize x partSize: keep that near 32 MiB, with at least one part in flight. */
export function chooseQueueSize(partSize: number): number {
  return Math.max(1, Math.min(4, Math.floor((32 * 1024 ** 2) / partSize)));
}

export class S3Storage implements Storage {
  readonly description: string;
  readonly client: S3Client;
  readonly checksum: S3ChecksumMode;
  #partSizeUsed = 0;
  readonly #clock = new ClockReading();
  readonly clockMayBeLocal = false;
  /** Whether to send If-None-Match: * (cleared when a store refuses the header itself). */
  #conditional = true;
  /** Told once when the store turns out to refuse conditional writes. */
  onNotice: ((message: string) => void) | undefined;

  constructor(private readonly s: S3Settings) {
    this.description = `s3://${s.bucket}/${s.prefix}`;
    this.checksum = s.checksum ?? defaultS3Checksum(s.endpoint);
    this.client = new S3Client({
      region: s.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      ...(s.endpoint ? { endpoint: s.endpoint } : {}),
      forcePathStyle: s.forcePathStyle,
      maxAttempts: s.maxAttempts,
      retryMode: 'standard', // exponential backoff with jitter for throttling, 5xx and network errors
      ...sdkChecksumOptions(this.checksum),
      // A stalled store must fail the request (then retried), not hang it: without
      // throwOnRequestTimeout the SDK only logs a warning when requestTimeout passes.
      requestHandler: {
        connectionTimeout: 10_000,
        requestTimeout: s.requestTimeoutMs ?? 120_000,
        socketTimeout: s.requestTimeoutMs ?? 120_000,
        throwOnRequestTimeout: true,
      },
    });
    // every answer's Date header is the store's clock: retention and the catalog compare against it
    this.client.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        const date = (out.response as { headers?: Record<string, string> } | undefined)?.headers?.date;
        if (date) this.#clock.set(Date.parse(date));
        return out;
      },
      { step: 'deserialize', name: 'pgmaintdStoreClock' },
    );
  }

  /** The part size of the last upload, for the log. */
  get partSize(): number {
    return this.#partSizeUsed;
  }

  #key(key: string): string {
    return `${this.s.prefix}${key}`;
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.s.bucket }));
    } catch (err) {
      throw explainS3Error(err, this.s.bucket, 'cannot use the bucket');
    }
    if (this.locking && !this.#lockChecked) await this.#checkObjectLock();
  }

  #lockChecked = false;

  /**
   * With S3_OBJECT_LOCK, the bucket must have Object Lock enabled (it can only be turned on for a
   * bucket with versioning): without it every locked upload is refused. A store that cannot say
   * (no permission to read the configuration, an S3-compatible store without the API) is a warning:
   * the uploads themselves then tell.
   */
  async #checkObjectLock(): Promise<void> {
    const mode = this.s.objectLock!.mode;
    let enabled: string | undefined;
    try {
      const r = await this.client.send(new GetObjectLockConfigurationCommand({ Bucket: this.s.bucket }));
      enabled = r.ObjectLockConfiguration?.ObjectLockEnabled;
    } catch (err) {
      const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'ObjectLockConfigurationNotFoundError')
        throw new OperatorError(
          `S3_OBJECT_LOCK is ${mode}, but the bucket s3://${this.s.bucket} does not have Object Lock enabled: every locked upload would be refused`,
          { exitCode: EXIT.CONFIG, hint: objectLockHint(this.s.bucket, mode) },
        );
      this.#lockChecked = true;
      this.onNotice?.(
        `S3_OBJECT_LOCK is ${mode}, but whether s3://${this.s.bucket} has Object Lock enabled could not be read (${e.name ?? 'Error'}${e.$metadata?.httpStatusCode ? ` HTTP ${e.$metadata.httpStatusCode}` : ''}: ${e.message ?? ''}); allow s3:GetBucketObjectLockConfiguration, or check the bucket by hand: ${objectLockHint(this.s.bucket, mode)}`,
      );
      return;
    }
    this.#lockChecked = true;
    if (enabled !== 'Enabled')
      this.onNotice?.(
        `S3_OBJECT_LOCK is ${mode}, but the store did not say Object Lock is enabled on s3://${this.s.bucket} (ObjectLockEnabled: ${enabled ?? 'absent'}): ${objectLockHint(this.s.bucket, mode)}`,
      );
  }

  async putStream(
    key: string,
    body: Readable,
    opts: { signal: AbortSignal; expectedBytes?: number; progress?: (bytes: number) => void },
  ): Promise<void> {
    this.#partSizeUsed = choosePartSize(opts.expectedBytes, this.s.partSize);
    let streamError: unknown;
    // The body's own failure (pg_dump died, the gate closed) is the cause of a failed upload; an
    // AbortError is lib-storage tearing the body down after a part failed, which is not.
    body.once('error', (err) => {
      if (err.name !== 'AbortError') streamError ??= err;
    });
    const upload = new Upload({
      client: this.client,
      queueSize: chooseQueueSize(this.#partSizeUsed),
      partSize: this.#partSizeUsed,
      // We abort the multipart upload ourselves: lib-storage's own abort, when it fails too, replaces
      // the error that matters (the part that failed) with the abort's.
      leavePartsOnError: true,
      params: {
        Bucket: this.s.bucket,
        Key: this.#key(key),
        Body: body,
        ContentType: 'application/gzip',
        ...this.#objectParams(),
        ...this.#ifAbsent(),
      },
    });
    if (opts.progress) {
      const report = opts.progress;
      upload.on('httpUploadProgress', (p) => report(p.loaded ?? 0));
    }
    const onAbort = () => void upload.abort().catch(() => undefined);
    opts.signal.addEventListener('abort', onAbort, { once: true });
    try {
      await upload.done();
    } catch (err) {
      await this.#abortMultipart(key, upload.uploadId);
      // The stream's own failure (pg_dump died, timeout) is the cause, not the abort that followed it.
      const cause = streamError ?? (opts.signal.aborted ? opts.signal.reason : undefined) ?? err;
      if (cause === err) this.#refusedCondition(err, key);
      if (cause instanceof OperatorError) throw cause;
      if (cause === err) throw this.#explainWrite(err, `upload of ${this.#key(key)} failed`);
      throw cause;
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Aborts a multipart upload so no parts linger (and cost). A part still in flight can land after
   * the first abort, so it is repeated once. Its own failure is only logged by the caller's cause.
   */
  async #abortMultipart(key: string, uploadId: string | undefined): Promise<void> {
    if (!uploadId) return; // a single PutObject, or nothing started: nothing to abort
    const abort = () =>
      this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.s.bucket, Key: this.#key(key), UploadId: uploadId }),
      );
    try {
      await abort();
      await new Promise((r) => setTimeout(r, 1000));
      await abort();
    } catch {
      // NoSuchUpload after the first abort is success; anything else leaves parts for the bucket's
      // AbortIncompleteMultipartUpload lifecycle rule (see the README).
    }
  }

  /** Whether uploads carry an Object Lock retention. */
  get locking(): boolean {
    return (this.s.objectLock?.mode ?? 'off') !== 'off';
  }

  /**
   * The Object Lock retention of an upload starting now: the store's clock (the lock ends by its
   * clock, not ours) plus S3_OBJECT_LOCK_DAYS, else the local clock. S3 refuses a locked PutObject
   * without Content-MD5 or a checksum, so a locked upload always asks for CRC32 (even with
   * S3_CHECKSUM=when_required; the SDK computes it for a whole object and for each part).
   */
  #lockParams(): {
    ObjectLockMode?: ObjectLockMode;
    ObjectLockRetainUntilDate?: Date;
    ChecksumAlgorithm?: ChecksumAlgorithm;
  } {
    const lock = this.s.objectLock;
    if (!lock || lock.mode === 'off') return {};
    const now = this.#clock.now()?.getTime() ?? Date.now();
    return {
      ObjectLockMode: lock.mode === 'compliance' ? 'COMPLIANCE' : 'GOVERNANCE',
      ObjectLockRetainUntilDate: new Date(now + lock.days * 86_400_000),
      ChecksumAlgorithm: 'CRC32',
    };
  }

  #objectParams() {
    return {
      ...this.#lockParams(),
      ...(this.s.sse ? { ServerSideEncryption: this.s.sse } : {}),
      ...(this.s.kmsKeyId ? { SSEKMSKeyId: this.s.kmsKeyId } : {}),
      ...(this.s.storageClass ? { StorageClass: this.s.storageClass as StorageClass } : {}),
    };
  }

  async putSmall(key: string, content: string): Promise<void> {
    const put = () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.s.bucket,
          Key: this.#key(key),
          Body: content,
          ContentType: 'application/json',
          ...this.#objectParams(),
          ...this.#ifAbsent(),
          StorageClass: undefined, // manifests stay in STANDARD: they are read on every listing
        }),
      );
    try {
      await put();
    } catch (err) {
      try {
        // a store that refuses the condition itself gets the write again, without it
        if (!this.#refusedCondition(err, key)) throw err;
        await put();
      } catch (again) {
        if (again instanceof OperatorError) throw again;
        throw this.#explainWrite(again, `writing ${this.#key(key)} failed`);
      }
    }
  }

  /** A failed write explained, with S3_CHECKSUM as the fix when the store refused the checksums. */
  #explainWrite(err: unknown, what: string): OperatorError {
    const explained = explainS3Error(err, this.s.bucket, what);
    const hint = checksumHint(err, this.checksum);
    if (!hint) return explained;
    return new OperatorError(explained.message, { exitCode: explained.exitCode, hint, cause: err });
  }

  #ifAbsent(): { IfNoneMatch?: string } {
    return this.#conditional ? { IfNoneMatch: '*' } : {};
  }

  /**
   * A failed conditional write: the key exists (412, or 409 for a race of two writers) throws
   * ObjectExistsError; a store that does not implement If-None-Match (501) is written to without it
   * from now on (keys are unique by construction; the condition is a second line). Returns whether
   * the store refused the condition.
   */
  #refusedCondition(err: unknown, key: string): boolean {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    if (!this.#conditional) return false;
    if (status === 412 || e.name === 'PreconditionFailed' || e.name === 'ConditionalRequestConflict')
      throw new ObjectExistsError(this.#key(key), `s3://${this.s.bucket}`);
    // a 501 that names the checksum headers is about them, not about the condition
    if ((status === 501 || e.name === 'NotImplemented') && !namesChecksum(err)) {
      this.#conditional = false;
      this.onNotice?.(
        `the store does not implement conditional writes (If-None-Match: *); pg-maintd writes without them from now on, relying on keys being unique`,
      );
      return true;
    }
    return false;
  }

  async getStream(key: string, signal?: AbortSignal): Promise<Readable> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.s.bucket, Key: this.#key(key) }), {
        abortSignal: signal,
      });
      return r.Body as Readable;
    } catch (err) {
      throw explainS3Error(err, this.s.bucket, `reading ${this.#key(key)} failed`);
    }
  }

  async getSmall(key: string): Promise<Buffer | undefined> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.s.bucket, Key: this.#key(key) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (
        err instanceof S3ServiceException &&
        (err.name === 'NoSuchKey' || err.$metadata.httpStatusCode === 404)
      )
        return undefined;
      throw explainS3Error(err, this.s.bucket, `reading ${this.#key(key)} failed`);
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    let token: string | undefined;
    try {
      do {
        const r = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.s.bucket,
            Prefix: this.#key(prefix),
            ContinuationToken: token,
          }),
        );
        for (const o of r.Contents ?? []) {
          if (!o.Key) continue;
          out.push({
            key: o.Key.slice(this.s.prefix.length),
            size: o.Size ?? 0,
            lastModified: o.LastModified ?? new Date(0),
          });
        }
        if (r.IsTruncated && (!r.NextContinuationToken || r.NextContinuationToken === token))
          throw new OperatorError(
            `listing s3://${this.s.bucket}/${this.#key(prefix)} failed: the store said the list was truncated but gave no way to the rest (${r.NextContinuationToken ? 'the same continuation token again' : 'no continuation token'}), so nothing was decided from it`,
            {
              exitCode: EXIT.UNAVAILABLE,
              hint: 'the store answered ListObjectsV2 wrongly: check its version and S3 compatibility (or the proxy in front of it)',
            },
          );
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      if (err instanceof OperatorError) throw err;
      throw explainS3Error(err, this.s.bucket, 'listing backups failed');
    }
    return out;
  }

  async now(): Promise<Date | undefined> {
    const cached = this.#clock.now();
    if (cached) return cached;
    await this.client.send(new HeadBucketCommand({ Bucket: this.s.bucket })).catch(() => undefined);
    return this.#clock.now();
  }

  async delete(keys: string[]): Promise<DeleteOutcome> {
    const lockedKeys: string[] = [];
    const failed: Array<{
      Key?: string | undefined;
      Code?: string | undefined;
      Message?: string | undefined;
    }> = [];
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      let r;
      try {
        r = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.s.bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.#key(k) })), Quiet: true },
          }),
        );
      } catch (err) {
        throw explainS3Error(err, this.s.bucket, 'deleting backups failed');
      }
      // per-key refusals: a locked object is retained, the rest of the batch (and later batches) go on
      for (const e of r.Errors ?? []) {
        if (e.Key && lockRefusal(e.Code, e.Message, this.locking))
          lockedKeys.push(e.Key.slice(this.s.prefix.length));
        else failed.push(e);
      }
    }
    const { locked, notLocked } = await this.#lockDates(lockedKeys);
    for (const key of notLocked)
      failed.push({
        Key: this.#key(key),
        Code: 'AccessDenied',
        Message: 'refused, and the object is not locked',
      });
    if (failed.length) {
      const first = failed[0]!;
      throw new OperatorError(
        `deleting ${failed.length} object(s) failed, e.g. ${first.Key}: ${first.Code} ${first.Message ?? ''}`,
        {
          exitCode: EXIT.UNAVAILABLE,
          hint: 'check that the credentials may s3:DeleteObject in the bucket; the other objects were deleted',
        },
      );
    }
    return { locked };
  }

  /**
   * Until when locked objects stay locked, where a HEAD tells (the first 20: it is for the log). An
   * object whose HEAD shows no lock, or one that has ended, was refused for another reason (no
   * delete permission): that is a failure, not a lock.
   */
  async #lockDates(keys: string[]): Promise<{ locked: LockedObject[]; notLocked: string[] }> {
    const locked: LockedObject[] = [];
    const notLocked: string[] = [];
    const storeNow = () => this.#clock.now()?.getTime() ?? Date.now();
    for (const [i, key] of keys.entries()) {
      if (i >= 20) {
        locked.push({ key });
        continue;
      }
      let until: Date | undefined;
      try {
        const h = await this.client.send(
          new HeadObjectCommand({ Bucket: this.s.bucket, Key: this.#key(key) }),
        );
        until = h.ObjectLockRetainUntilDate;
        if (h.ObjectLockLegalHoldStatus !== 'ON' && (!until || until.getTime() <= storeNow())) {
          notLocked.push(key);
          continue;
        }
      } catch {
        // the date is only told in the log: a HEAD that fails leaves it unknown
      }
      locked.push({ key, ...(until ? { until } : {}) });
    }
    return { locked, notLocked };
  }

  close(): void {
    this.client.destroy();
  }
}

function objectLockHint(bucket: string, mode: string): string {
  return `Object Lock is set when a bucket is created: create a new bucket with it (aws s3api create-bucket --bucket <name> --object-lock-enabled-for-bucket), point S3_BUCKET there, and add a lifecycle rule that expires noncurrent versions; or, on AWS, enable it on ${bucket} (versioning on first: aws s3api put-object-lock-configuration --bucket ${bucket} --object-lock-configuration ObjectLockEnabled=Enabled); or set S3_OBJECT_LOCK=off (it is ${mode})`;
}

/**
 * Whether a per-key delete error is an Object Lock refusal: S3 answers AccessDenied ("Access Denied
 * because object protected by object lock") for a locked version. With locking on, any AccessDenied
 * is taken for one (stores word it differently); without, only one that says so, so that missing
 * delete permission still fails loudly.
 */
export function lockRefusal(
  code: string | undefined,
  message: string | undefined,
  locking: boolean,
): boolean {
  if (/object.?lock|retention|legal.?hold|WORM/i.test(message ?? '')) return true;
  return locking && code === 'AccessDenied';
}

// HEAD answers carry no error body; say what their status means.
const STATUS_TEXT: Record<number, string> = {
  301: 'the bucket is in another region (set S3_REGION)',
  400: 'bad request',
  403: 'access denied',
  404: 'no such bucket or key',
  500: 'internal error in the store',
  503: 'the store is unavailable or throttling',
};

// Network failures, named by their errno code: the SDK calls a reset connection a "TimeoutError",
// and a refused one a plain "Error", neither of which says what happened. (ETIMEDOUT keeps the
// SDK's "TimeoutError", which is true, and its message, which names the request timeout.)
const NETWORK_TEXT: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed by the store',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** An S3 failure as an operator reads it: what failed, and what to check. */
function explainS3Error(err: unknown, bucket: string, what: string): OperatorError {
  const e = err as {
    name?: string;
    message?: string;
    code?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e.$metadata?.httpStatusCode;
  const network = e.code ? NETWORK_TEXT[e.code] : undefined;
  const name = network ? `${network} (${e.code})` : (e.name ?? e.code ?? 'Error');
  let hint = 'check S3_ENDPOINT, network access to the store, and its status';
  if (
    name === 'NoSuchBucket' ||
    (status === 404 && /Bucket/i.test(what + name)) ||
    (status === 404 && name === 'NotFound')
  ) {
    hint = `the bucket "${bucket}" does not exist: create it, or fix S3_BUCKET (and S3_REGION / S3_ENDPOINT)`;
  } else if (status === 403 || /AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden/.test(name)) {
    hint = `access denied: check the credentials (AWS_* env, shared config, IRSA role) and that they may use s3://${bucket}`;
  } else if (name === 'TimeoutError' && !network) {
    hint =
      'the store did not answer within S3_REQUEST_TIMEOUT, on each of S3_MAX_ATTEMPTS attempts: check its status and the network path, or raise S3_REQUEST_TIMEOUT';
  } else if (status === 503 || /SlowDown|Throttl/.test(name)) {
    hint = 'the store is throttling or unavailable; retried with backoff until S3_MAX_ATTEMPTS ran out';
  }
  const bodiless = !e.message || e.message === 'UnknownError' || name === 'Unknown' || name === 'NotFound';
  const detail = bodiless ? (STATUS_TEXT[status ?? 0] ?? e.message ?? String(err)) : e.message;
  return new OperatorError(
    `${what} (s3://${bucket}): ${name}${status ? ` (HTTP ${status})` : ''}: ${detail}`,
    {
      exitCode: EXIT.UNAVAILABLE,
      hint,
      cause: err,
    },
  );
}
