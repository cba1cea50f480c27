/**
 * Drops the statements of chosen extensions from a plain-format dump on its way into psql: used by
 * the restore drill for pg_stat_statements, which only a superuser may create (it is not a trusted
 * extension) and which holds no data, so a least-privilege role can still drill a backup of a
 * database that has it. pg_dump writes extensions, one statement per line, before any data: the
 * filter looks at lines only until the first COPY, then passes the stream through untouched.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** Extension names as a regex alternation (identifier characters only), for the plain and custom filters. */
export function extensionAlternation(extensions: string[]): string {
  return extensions.map((e) => e.replace(/[^a-z0-9_]/gi, '')).join('|');
}

/** A statement creating or commenting an extension is one short line; longer ones are not held. */
const MAX_HELD = 64 * 1024;

export class ExtensionFilter extends Transform {
  readonly #drop: RegExp;
  #pending: Buffer = Buffer.alloc(0);
  #passThrough = false;
  #passLine = false;
  dropped = 0;

  constructor(extensions: string[]) {
    super();
    this.#drop = new RegExp(
      `^(CREATE EXTENSION IF NOT EXISTS|COMMENT ON EXTENSION) "?(${extensionAlternation(extensions)})"?( |;)`,
    );
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (this.#passThrough) return cb(null, chunk);
    if (this.#passLine) {
      // the rest of a line too long to be an extension's statement
      const nl = chunk.indexOf(0x0a);
      if (nl < 0) return cb(null, chunk);
      this.#passLine = false;
      this.push(chunk.subarray(0, nl + 1));
      chunk = chunk.subarray(nl + 1);
    }
    let buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    const out: Buffer[] = [];
    let nl: number;
    while ((nl = buf.indexOf(0x0a)) >= 0) {
      const line = buf.subarray(0, nl + 1);
      buf = buf.subarray(nl + 1);
      const head = line.subarray(0, 80).toString('latin1');
      if (head.startsWith('COPY ')) {
        this.#passThrough = true;
        out.push(line, buf);
        this.#pending = Buffer.alloc(0);
        return cb(null, Buffer.concat(out));
      }
      if (this.#drop.test(head)) this.dropped++;
      else out.push(line);
    }
    if (buf.length > MAX_HELD) {
      // held no longer (joining ever longer pieces would cost time squared): passed on as it comes
      out.push(buf);
      this.#passLine = true;
      buf = Buffer.alloc(0);
    }
    this.#pending = Buffer.from(buf);
    cb(null, out.length ? Buffer.concat(out) : undefined);
  }

  override _flush(cb: TransformCallback): void {
    cb(null, this.#pending.length ? this.#pending : undefined);
  }
}
