/** Pass-through streams that hash and count what flows through them. */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export class HashCounter extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;
  #digest: string | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.#digest = this.#hash.digest('hex');
    cb();
  }

  /** The SHA-256 in hex, once the stream has ended. */
  get sha256(): string {
    if (!this.#digest) throw new Error('hash read before the stream ended');
    return this.#digest;
  }
}

/** Counts bytes (for progress) without hashing. */
export class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/**
 * Holds back the end of a stream until `until` settles: its rejection fails the stream before the
 * consumer sees the end, so an upload or a file is never completed from a failed producer.
 */
export class EndGate extends Transform {
  constructor(private readonly until: () => Promise<unknown>) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.until().then(
      () => cb(),
      (err: unknown) => cb(err instanceof Error ? err : new Error(String(err))),
    );
  }
}
