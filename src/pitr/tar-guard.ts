/**
 * A pass-through stream between gunzip and `tar -x` (run as root) that lets through only what a
 * PostgreSQL data directory holds: regular files and directories, named by plain relative paths. The
 * base backup is hostile until pg_verifybackup has checked it, and it checks neither every file nor
 * what kind of file each is: a symlink, a hard link or a device node extracted by root would let the
 * store's writer steer root's later writes or hand devices to the server's user. Anything else fails
 * the stream before tar sees the member's header.
 */
import { cString, tarSize } from './tar-capture.js';
import { Transform, type TransformCallback } from 'node:stream';

const BLOCK = 512;
/** pax and GNU long-name headers are small; a larger one is not pg_basebackup's. */
const MAX_META = 64 * 1024;

export class TarGuardError extends Error {}

export class TarGuard extends Transform {
  /** Members let through. */
  members = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #remaining = 0;
  /** The data of a pax ('x') or GNU long-name ('L') member, read to check the name it gives. */
  #meta: { type: string; chunks: Buffer[]; left: number } | undefined;
  /** The next member's name from a pax or long-name header (it replaces the header's own). */
  #nextName: string | undefined;
  #ended = false;

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
    while (off < chunk.length) {
      if (this.#ended) {
        if (chunk.subarray(off).some((b) => b !== 0))
          throw new TarGuardError('the base backup has data after the end of its tar archive');
        return;
      }
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - off);
        if (this.#meta && this.#meta.left > 0) {
          const take = Math.min(n, this.#meta.left);
          this.#meta.chunks.push(Buffer.from(chunk.subarray(off, off + take)));
          this.#meta.left -= take;
          if (this.#meta.left === 0) this.#metaDone(this.#meta.type, Buffer.concat(this.#meta.chunks));
        }
        this.#remaining -= n;
        off += n;
        continue;
      }
      const n = Math.min(BLOCK - this.#pendingBytes, chunk.length - off);
      this.#pending.push(chunk.subarray(off, off + n));
      this.#pendingBytes += n;
      off += n;
      if (this.#pendingBytes < BLOCK) return;
      const header = Buffer.concat(this.#pending, BLOCK);
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#header(header);
    }
  }

  #header(h: Buffer): void {
    if (h.every((b) => b === 0)) {
      if (this.#nextName !== undefined || this.#meta)
        throw new TarGuardError('the base backup’s tar archive ends after a long-name header');
      this.#ended = true;
      return;
    }
    // POSIX ustar has a name prefix at 345; GNU's format ('ustar  ') keeps other fields there
    const ustar = h.subarray(257, 263).toString('latin1') === 'ustar\0';
    const name = cString(h.subarray(0, 100));
    const prefix = ustar ? cString(h.subarray(345, 500)) : '';
    const size = tarSize(h.subarray(124, 136));
    const mode = tarSize(h.subarray(100, 108));
    if (size === undefined || mode === undefined || !checksumOk(h))
      throw new TarGuardError(
        `the base backup’s tar archive has a malformed header (member ${JSON.stringify(name)})`,
      );
    const type = String.fromCharCode(h[156] ?? 0);
    this.#remaining = size + ((BLOCK - (size % BLOCK)) % BLOCK);
    if (type === 'x' || type === 'L') {
      if (size > MAX_META) throw new TarGuardError(`the base backup has a ${size}-byte tar extended header`);
      this.#meta = { type, chunks: [], left: size };
      if (size === 0) this.#metaDone(type, Buffer.alloc(0));
      return;
    }
    const full = this.#nextName ?? (prefix ? `${prefix}/${name}` : name);
    this.#nextName = undefined;
    if (type !== '0' && type !== '\0' && type !== '5')
      throw new TarGuardError(
        `the base backup holds ${JSON.stringify(full)}, a ${KINDS[type] ?? `tar member of type ${JSON.stringify(type)}`}: a data directory restored by pg-maintd holds only regular files and directories`,
      );
    checkPath(full);
    checkPath(name);
    if ((mode & 0o7000) !== 0)
      throw new TarGuardError(
        `the base backup holds ${JSON.stringify(full)} with set-id or sticky mode bits`,
      );
    this.members++;
  }

  #metaDone(type: string, data: Buffer): void {
    this.#meta = undefined;
    if (type === 'L') {
      this.#nextName = cString(data);
      checkPath(this.#nextName);
      return;
    }
    // pax records: "<len> <key>=<value>\n"; a path or linkpath record renames the next member
    let off = 0;
    while (off < data.length) {
      const space = data.indexOf(0x20, off);
      const len = space > off ? Number(data.subarray(off, space).toString('latin1')) : NaN;
      if (!Number.isInteger(len) || len <= 0 || off + len > data.length)
        throw new TarGuardError('the base backup has a malformed tar extended header');
      const record = data.subarray(space + 1, off + len - 1).toString('utf8');
      const eq = record.indexOf('=');
      const key = eq < 0 ? record : record.slice(0, eq);
      if (key === 'path') {
        this.#nextName = record.slice(eq + 1);
        checkPath(this.#nextName);
      } else if (key === 'linkpath')
        throw new TarGuardError('the base backup’s tar archive names a link target');
      off += len;
    }
  }
}

const KINDS: Record<string, string> = {
  '1': 'hard link',
  '2': 'symbolic link',
  '3': 'character device',
  '4': 'block device',
  '6': 'FIFO',
  g: 'global pax header',
  K: 'GNU long link name',
};

function checkPath(path: string): void {
  const parts = path.split('/');
  if (path === '' || path.startsWith('/') || parts.includes('..') || path.includes('\0'))
    throw new TarGuardError(
      `the base backup holds a member named ${JSON.stringify(path)}: only relative paths inside the data directory are restored`,
    );
}

/** The header checksum: what tar itself checks, so that this filter and tar read the same header. */
function checksumOk(h: Buffer): boolean {
  const stored = tarSize(h.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return stored === sum;
}
