/**
 * age encryption as a Transform for the backup's stream, with the payload sealed by node:crypto's
 * ChaCha20-Poly1305 (OpenSSL) instead of the pure-JavaScript cipher of age-encryption, which was
 * several times slower than gzip's output on the backup path. The header (the recipients' stanzas and
 * its MAC) is still made by age-encryption; only the STREAM payload is ours, as age specifies it:
 *   payload key = HKDF-SHA-256(file key, salt = 16-byte nonce, info "payload")
 *   64 KiB chunks, each sealed with nonce = 11-byte big-endian counter || last-chunk flag (0 or 1),
 *   the last chunk short (or full, never an empty one after a full one; empty only for empty input).
 * The output is read by `age -d` and by decryptStream (tested in test/unit/age-stream.test.ts).
 */
import { createCipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { Encrypter } from 'age-encryption';

const CHUNK = 64 * 1024;
const TAG = 16;
const NONCE = 16;

/**
 * The header age-encryption writes for `recipients` and the file key it sealed. A recipient of our own
 * that wraps nothing (no stanza) is handed the file key like every other recipient: no private API.
 */
async function header(recipients: string[]): Promise<{ header: Buffer; fileKey: Buffer }> {
  if (recipients.length === 0) throw new Error('age encryption needs at least one recipient');
  let fileKey: Buffer | undefined;
  const enc = new Encrypter();
  enc.addRecipient({
    wrapFileKey: (key: Uint8Array) => {
      fileKey = Buffer.from(key);
      return Promise.resolve([]);
    },
  });
  for (const r of recipients) enc.addRecipient(r);
  // an empty file: the header, the 16-byte nonce, and one sealed empty chunk (its 16-byte tag)
  const empty = Buffer.from(await enc.encrypt(new Uint8Array(0)));
  const head = empty.subarray(0, empty.length - NONCE - TAG);
  if (!fileKey || fileKey.length !== 16 || !head.subarray(-1).equals(Buffer.from('\n')))
    throw new Error('age-encryption produced an unexpected header');
  return { header: Buffer.from(head), fileKey };
}

/** A Transform whose output is its input encrypted to `recipients`, in the age format. */
export async function ageEncrypter(recipients: string[]): Promise<Transform> {
  const { header: head, fileKey } = await header(recipients);
  const nonce = randomBytes(NONCE);
  const key = Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32));
  fileKey.fill(0);
  return new AgeStreamEncrypter(key, Buffer.concat([head, nonce]));
}

class AgeStreamEncrypter extends Transform {
  /** Input not sealed yet: at most one chunk and what came with the last write. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #counter = 0n;
  #prefix: Buffer | undefined;

  constructor(
    private readonly key: Buffer,
    prefix: Buffer,
  ) {
    super({ highWaterMark: 4 * CHUNK });
    this.#prefix = prefix;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    // a full chunk is sealed only once more input follows it: the last chunk carries the flag.
    // The pieces go to the cipher as they are: concatenating them cost more than the cipher itself.
    while (this.#pendingBytes > CHUNK) {
      const pieces: Buffer[] = [];
      let need = CHUNK;
      while (need > 0) {
        const head = this.#pending[0]!;
        if (head.length <= need) {
          pieces.push(head);
          this.#pending.shift();
          need -= head.length;
        } else {
          pieces.push(head.subarray(0, need));
          this.#pending[0] = head.subarray(need);
          need = 0;
        }
      }
      this.#pendingBytes -= CHUNK;
      this.#seal(pieces, false);
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.#seal(this.#pending, true);
    this.#pending = [];
    this.key.fill(0);
    cb();
  }

  /** Seals one chunk (given in pieces) and pushes it (the header and nonce first, before the first one). */
  #seal(pieces: Buffer[], last: boolean): void {
    const iv = Buffer.alloc(12);
    // 11-byte big-endian counter: the high 3 bytes stay zero far beyond any backup's size
    iv.writeBigUInt64BE(this.#counter, 3);
    iv[11] = last ? 1 : 0;
    this.#counter++;
    const cipher = createCipheriv('chacha20-poly1305', this.key, iv, { authTagLength: TAG });
    if (this.#prefix) {
      this.push(this.#prefix);
      this.#prefix = undefined;
    }
    for (const piece of pieces) this.push(cipher.update(piece));
    cipher.final();
    this.push(cipher.getAuthTag());
  }
}
