/**
 * A plain-format backup is a psql script, and psql meta-commands (`\!` runs a shell command, `\o |`
 * a pipe, `\copy ... program`) would run on this host with the database password in the environment.
 * The script restored is data, not code: psql runs it in restricted mode, which refuses every
 * meta-command. The guard opens the stream with `\restrict <key>` under a random key the script
 * cannot know (and never `\unrestrict`s).
 *
 * pg_dump 13.22/14.19/15.14/16.10/17.6 and later write `\restrict K` as the first line after the
 * script's comment header and `\unrestrict K` near its end, K random per dump; restricted mode would
 * refuse both. The guard leaves out exactly those two: the `\restrict K` that is the header's first
 * line that is not a comment, and lines that are exactly `\unrestrict K` with that K. It does not
 * parse SQL or COPY data (a string literal or a row can hold anything), and no other line can be
 * mistaken for them: K is unknown until pg_dump writes it. Security does not rest on this: whatever
 * it lets through, psql refuses to run as a meta-command.
 */
import { randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

const RESTRICT_LINE = /^\\restrict ([A-Za-z0-9]+)\r?$/;
const COMMENT_OR_BLANK = /^(?:--.*)?\r?$/;
/** The header is comments; past this without a first statement, there is no pg_dump \restrict to find. */
const MAX_HEADER = 64 * 1024;

/** psql that knows `\restrict`: the minor releases of each major that added it. */
const RESTRICT_SINCE: Record<number, number> = { 13: 22, 14: 19, 15: 14, 16: 10, 17: 6 };

/** Why this psql cannot run a restore safely, or undefined when it can. */
export function psqlRestrictProblem(major: number, minor: number): string | undefined {
  if (major >= 18) return undefined;
  const since = RESTRICT_SINCE[major];
  if (since !== undefined && minor >= since) return undefined;
  const needed = Object.entries(RESTRICT_SINCE)
    .map(([m, n]) => `${m}.${n}`)
    .join(', ');
  return `psql ${major}.${minor} cannot restrict meta-commands (\\restrict came in ${needed} and 18), so a backup's script could run commands on this host`;
}

/** Session settings a restore sets for itself, as pg_dump does, whatever the role or database sets. */
export const RESTORE_SESSION_SQL =
  "SELECT pg_catalog.set_config(name, '0', false) FROM pg_catalog.pg_settings WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout', 'transaction_timeout');\n";

export class RestrictGuard extends Transform {
  readonly #key = randomBytes(24).toString('hex');
  #started = false;
  /** Until the header's first statement line is seen: the bytes held back. */
  #header: Buffer | undefined = Buffer.alloc(0);
  /** `\n\unrestrict K\n` once pg_dump's K is known. */
  #end: Buffer | undefined;
  /** The last bytes passed on (less than the pattern), for an occurrence split across chunks. */
  #carry: Buffer = Buffer.alloc(0);

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#start();
    if (this.#header) {
      this.#header = Buffer.concat([this.#header, chunk]);
      const rest = this.#readHeader(false);
      if (rest) this.#body(rest);
    } else this.#body(chunk);
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.#start();
    if (this.#header) {
      const rest = this.#readHeader(true);
      if (rest) this.#body(rest);
    }
    // pg_dump's \unrestrict K as the very last line, with no newline after it
    let last = this.#carry;
    if (this.#end && last.subarray(-this.#end.length).equals(this.#end))
      last = last.subarray(0, last.length - this.#end.length + 1);
    if (last.length) this.push(last);
    cb();
  }

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    this.push(`\\restrict ${this.#key}\n${RESTORE_SESSION_SQL}`);
  }

  /**
   * Looks through the held header for its first statement line; returns what follows it (the body)
   * once decided, or undefined while more is needed.
   */
  #readHeader(final: boolean): Buffer | undefined {
    const buf = this.#header!;
    let pos = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, pos);
      if (nl < 0 && !final && buf.length <= MAX_HEADER) return undefined; // the line is not complete
      const end = nl < 0 ? buf.length : nl + 1;
      const line = buf.toString('utf8', pos, nl < 0 ? buf.length : nl);
      if (nl >= 0 && COMMENT_OR_BLANK.test(line)) {
        pos = end;
        continue;
      }
      this.#header = undefined;
      const m = nl >= 0 ? RESTRICT_LINE.exec(line) : null;
      if (m) {
        this.#end = Buffer.from(`\n\\unrestrict ${m[1]}`);
        this.push(buf.subarray(0, pos)); // the comments, then nothing of the \restrict line
        // the body starts with the line's newline, so an \unrestrict right after it still matches
        return buf.subarray(nl);
      }
      return buf;
    }
  }

  /** Passes the body on, leaving out each line that is exactly `\unrestrict K`. */
  #body(chunk: Buffer): void {
    if (!this.#end) return void this.push(chunk);
    let data = this.#carry.length ? Buffer.concat([this.#carry, chunk]) : chunk;
    for (;;) {
      const at = data.indexOf(this.#end);
      if (at < 0) break;
      const after = at + this.#end.length;
      // a whole line: what follows is its end of line (or the line ends the script)
      const tail = data.subarray(after, after + 2);
      const lineEnd = tail[0] === 0x0a ? 1 : tail[0] === 0x0d && tail[1] === 0x0a ? 2 : -1;
      if (lineEnd < 0 && tail.length < 2) break; // not decidable yet: keep it for the next chunk
      if (lineEnd < 0) {
        this.push(data.subarray(0, after));
        data = data.subarray(after);
        continue;
      }
      this.push(data.subarray(0, at + 1)); // up to and with the newline before it
      data = data.subarray(after + lineEnd);
    }
    // keep back what could be the start of an occurrence
    const keep = Math.min(data.length, this.#end.length + 1);
    this.push(data.subarray(0, data.length - keep));
    this.#carry = Buffer.from(data.subarray(data.length - keep));
  }
}
