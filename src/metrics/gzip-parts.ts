/**
 * gzip of a body made of a large part that changes once per poll and a small tail that changes more
 * often (process and runtime metrics). The large part is deflated once, ending on a sync flush (byte
 * aligned, not the final block), and every body with that part reuses those bytes: only the tail is
 * compressed again, and the CRC-32 of the whole is continued from the part's. The result is one
 * ordinary gzip member (RFC 1952), so any gunzip reads it, and it decompresses to exactly
 * part + tail. A deflate stream may be continued this way because every block after a flush may
 * only refer back into the data of its own compressor, which the tail's compressor keeps to the tail.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const deflateRaw = promisify(zlib.deflateRaw);
const gzip = promisify(zlib.gzip);
/** Prometheus pays the decompression; level 6 (zlib's default) is most of level 9's gain for a third of its time. */
const LEVEL = 6;
/** ID1 ID2, CM = deflate, no flags, no mtime, XFL 0, OS unknown. */
const HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
/** zlib.crc32 came with Node 22.2; without it every body is compressed whole. */
const crc32 = (zlib as { crc32?: (data: Buffer, value?: number) => number }).crc32;

/** The large part of a body: compressed on first use, then reused for every body that starts with it. */
export class GzipPart {
  #deflated: Promise<{ bytes: Buffer; crc: number }> | undefined;

  constructor(readonly text: Buffer) {}

  /** Raw deflate blocks of `text`, ending on a sync flush, with the CRC-32 of `text`. */
  deflated(): Promise<{ bytes: Buffer; crc: number }> {
    if (this.#deflated) return this.#deflated;
    const deflated = (this.#deflated = deflateRaw(this.text, {
      level: LEVEL,
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    }).then((bytes) => ({ bytes, crc: crc32!(this.text) })));
    deflated.catch(() => this.#deflated === deflated && (this.#deflated = undefined)); // tried again next time
    return deflated;
  }
}

/** gzip of `part.text` followed by `tail`; `part`'s compression is shared by every call with it. */
export async function gzipParts(part: GzipPart, tail: Buffer): Promise<Buffer> {
  if (!crc32 || part.text.length === 0) return gzip(Buffer.concat([part.text, tail]), { level: LEVEL });
  const [head, rest] = await Promise.all([part.deflated(), deflateRaw(tail, { level: LEVEL })]);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(tail, head.crc) >>> 0, 0);
  trailer.writeUInt32LE((part.text.length + tail.length) % 2 ** 32, 4); // ISIZE: the length modulo 2^32
  return Buffer.concat([HEADER, head.bytes, rest, trailer]);
}
