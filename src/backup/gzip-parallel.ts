/**
 * Parallel gzip, as pigz does it: the input is cut into blocks that are compressed at the same time
 * on the libuv thread pool, each into an independent gzip member; the members are written in order.
 * Concatenated members form one valid .gz file (RFC 1952, 2.2), which gunzip and zlib read whole.
 * Memory stays flat: at most `threads * 2` blocks are in flight.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { promisify } from 'node:util';
import { gzip as gzipCb, type ZlibOptions } from 'node:zlib';

const gzip = promisify<Buffer, ZlibOptions, Buffer>(gzipCb);

export interface ParallelGzipOptions {
  level: number;
  threads: number;
  /** Input bytes per member; larger blocks compress a little better. */
  blockSize?: number;
}

export class ParallelGzip extends Transform {
  readonly #level: number;
  readonly #maxInFlight: number;
  readonly #blockSize: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #inFlight: Promise<Buffer>[] = [];
  members = 0;
  bytesIn = 0;
  bytesOut = 0;

  constructor(o: ParallelGzipOptions) {
    super();
    this.#level = o.level;
    this.#maxInFlight = Math.max(1, o.threads) * 2;
    this.#blockSize = o.blockSize ?? 1024 * 1024;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytesIn += chunk.length;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes < this.#blockSize) return cb();
    this.#dispatch();
    this.#drainTo(this.#maxInFlight - 1).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    if (this.#pendingBytes > 0 || this.members + this.#inFlight.length === 0) this.#dispatch();
    this.#drainTo(0).then(() => cb(), cb);
  }

  #dispatch() {
    const block = Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    const job = gzip(block, { level: this.#level });
    job.catch(() => undefined); // awaited in order below; this keeps an early failure from going unhandled
    this.#inFlight.push(job);
  }

  /** Writes finished members, in order, until at most `limit` remain in flight. */
  async #drainTo(limit: number) {
    while (this.#inFlight.length > limit) {
      const out = await this.#inFlight.shift()!;
      this.members++;
      this.bytesOut += out.length;
      this.push(out);
    }
  }
}
