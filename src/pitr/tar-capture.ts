/**
 * A pass-through stream that reads the tar headers flowing through it and keeps small named members
 * (pg_basebackup's backup_label and backup_manifest) as they pass, so a base backup streams to the
 * store with no temporary file and still knows where its WAL starts and ends. The bytes are never
 * changed; a header that does not parse fails the stream (what pg_basebackup wrote is not a tar).
 */
import { Transform, type TransformCallback } from 'node:stream';

const BLOCK = 512;

export class TarCapture extends Transform {
  readonly captured = new Map<string, Buffer>();
  /** Member names seen, for messages (the first few hundred). */
  members = 0;
  #buf: Buffer[] = [];
  #bufBytes = 0;
  /** Bytes of the current member's data (and padding) still to skip or capture. */
  #remaining = 0;
  #padding = 0;
  #capturing: { name: string; chunks: Buffer[]; left: number } | undefined;
  #ended = false;

  constructor(
    private readonly wanted: ReadonlySet<string>,
    private readonly maxBytes = 16 * 1024 * 1024,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.#consume(chunk);
    } catch (err) {
      return cb(err as Error);
    }
    cb(null, chunk);
  }

  #consume(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.#ended) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - off);
        if (this.#capturing && this.#capturing.left > 0) {
          const take = Math.min(n, this.#capturing.left);
          this.#capturing.chunks.push(Buffer.from(chunk.subarray(off, off + take)));
          this.#capturing.left -= take;
          if (this.#capturing.left === 0) {
            this.captured.set(this.#capturing.name, Buffer.concat(this.#capturing.chunks));
          }
        }
        this.#remaining -= n;
        off += n;
        if (this.#remaining === 0) this.#capturing = undefined;
        continue;
      }
      // gather one header block
      const need = BLOCK - this.#bufBytes;
      const n = Math.min(need, chunk.length - off);
      this.#buf.push(chunk.subarray(off, off + n));
      this.#bufBytes += n;
      off += n;
      if (this.#bufBytes < BLOCK) return;
      const header = Buffer.concat(this.#buf, BLOCK);
      this.#buf = [];
      this.#bufBytes = 0;
      this.#header(header);
    }
  }

  #header(h: Buffer): void {
    if (h.every((b) => b === 0)) {
      // the end-of-archive marker (two zero blocks); anything after is padding
      this.#ended = true;
      return;
    }
    const name = cString(h.subarray(0, 100));
    const prefix = h.subarray(257, 263).toString('latin1').startsWith('ustar')
      ? cString(h.subarray(345, 500))
      : '';
    const size = tarSize(h.subarray(124, 136));
    if (size === undefined)
      throw new Error(`the base backup's tar stream has a malformed header (member ${JSON.stringify(name)})`);
    const full = prefix ? `${prefix}/${name}` : name;
    this.members++;
    this.#padding = (BLOCK - (size % BLOCK)) % BLOCK;
    this.#remaining = size + this.#padding;
    const type = String.fromCharCode(h[156] ?? 0);
    if ((type === '0' || type === '\0') && this.wanted.has(full)) {
      if (size > this.maxBytes)
        throw new Error(`${full} in the base backup is larger than ${this.maxBytes} bytes`);
      this.#capturing = { name: full, chunks: [], left: size };
      if (size === 0) this.captured.set(full, Buffer.alloc(0));
    }
  }
}

/** A NUL-terminated tar header field as text. */
export function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

/** A tar number field: octal text, or base-256 (high bit set) for members of 8 GiB and more. */
export function tarSize(field: Buffer): number | undefined {
  if ((field[0]! & 0x80) !== 0) {
    let n = 0n;
    for (let i = 1; i < field.length; i++) n = (n << 8n) | BigInt(field[i]!);
    return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : undefined;
  }
  const text = cString(field).trim();
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : text === '' ? 0 : undefined;
}
