/**
 * Authenticity of what pg-maintd writes to the store (BACKUP_SIGNING_KEY_FILE): an HMAC-SHA-256 over
 * the canonical JSON of a manifest or drill record, which holds the data object's SHA-256. Whoever
 * can write to the store but lacks the key cannot make a backup, or a drill verdict, that passes.
 * The file may hold several keys, one per line: the first signs, each of them verifies (rotation).
 * Keys never leave the process: the store gets a key id, a one-way hash of the key.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

export const SignatureSchema = z
  .object({
    algorithm: z.literal('hmac-sha256'),
    keyId: z.string().regex(/^[0-9a-f]{16}$/),
    value: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type Signature = z.infer<typeof SignatureSchema>;

export type SignatureCheck = 'ok' | 'missing' | 'invalid' | 'unknown_key';

/** JSON with object keys sorted at every level: the same document always gives the same bytes. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export class Signer {
  readonly #keys: Array<{ id: string; key: Buffer }>;

  constructor(keys: Buffer[]) {
    if (keys.length === 0) throw new Error('a signer needs a key');
    this.#keys = keys.map((key) => ({ id: keyId(key), key }));
  }

  /** The document with its signature (any signature it had is replaced). */
  sign<T extends object>(doc: T): T & { signature: Signature } {
    const { id, key } = this.#keys[0]!;
    const body = unsigned(doc);
    return { ...body, signature: { algorithm: 'hmac-sha256', keyId: id, value: mac(key, body) } } as T & {
      signature: Signature;
    };
  }

  /** An HMAC of a short text under the signing key, in hex (a tag bound into a name). */
  tag(text: string): string {
    return createHmac('sha256', this.#keys[0]!.key).update(text).digest('hex');
  }

  /** Whether `hex` is the tag of `text` under any of the keys. */
  tagMatches(text: string, hex: string): boolean {
    if (!/^[0-9a-f]{64}$/.test(hex)) return false;
    const got = Buffer.from(hex, 'hex');
    return this.#keys.some((k) => timingSafeEqual(got, createHmac('sha256', k.key).update(text).digest()));
  }

  check(doc: object): SignatureCheck {
    const sig = (doc as { signature?: unknown }).signature;
    if (sig === undefined) return 'missing';
    const parsed = SignatureSchema.safeParse(sig);
    if (!parsed.success) return 'invalid';
    const entry = this.#keys.find((k) => k.id === parsed.data.keyId);
    if (!entry) return 'unknown_key';
    const expected = Buffer.from(mac(entry.key, unsigned(doc)), 'hex');
    return timingSafeEqual(expected, Buffer.from(parsed.data.value, 'hex')) ? 'ok' : 'invalid';
  }
}

/** What a failed check means, for a message. */
export function describeSignatureCheck(check: Exclude<SignatureCheck, 'ok'>): string {
  switch (check) {
    case 'missing':
      return 'signature missing: written without BACKUP_SIGNING_KEY_FILE, or by someone without the key';
    case 'unknown_key':
      return 'signed with a key this installation does not hold (not in BACKUP_SIGNING_KEY_FILE)';
    default:
      return 'signature invalid: changed after it was signed, or forged';
  }
}

function keyId(key: Buffer): string {
  return createHmac('sha256', key).update('pg-maintd signing key id').digest('hex').slice(0, 16);
}

function mac(key: Buffer, body: object): string {
  return createHmac('sha256', key).update(canonicalJson(body)).digest('hex');
}

function unsigned<T extends object>(doc: T): Omit<T, 'signature'> {
  const { signature: _drop, ...body } = doc as T & { signature?: unknown };
  return body;
}
