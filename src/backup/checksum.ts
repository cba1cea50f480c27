/** The SHA-256 of a stream, checked at its end against the manifest's. */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

/** Fails at the end of the stream when the bytes do not hash to the expected SHA-256. */
export class ChecksumVerifier extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;
  constructor(
    private readonly expected: string,
    private readonly key: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    const actual = this.#hash.digest('hex');
    if (actual === this.expected) return cb();
    cb(
      new OperatorError(
        `checksum mismatch for ${this.key}: the stored object hashes to ${actual}, the manifest says ${this.expected}`,
        {
          hint: 'the object was altered or corrupted in storage; restore another backup (`pg-maintd backups list`)',
          exitCode: EXIT.DATAERR,
        },
      ),
    );
  }
}
