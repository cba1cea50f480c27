/**
 * Credentials for /metrics: basic auth against bcrypt hashes (exporter-toolkit's basic_auth_users)
 * and a bearer token. Neither the time taken nor the answer tells an unknown user from a wrong
 * password: an unknown user is checked against a dummy hash of the same cost.
 *
 * A flood of wrong passwords must not lock out the right one, nor take the CPU: a password that
 * verified is cached (a scrape skips bcrypt); bcrypt runs on a worker thread, one check at a time,
 * at most half the time, taken in turn from each client address, and a client with more than a
 * few checks waiting is told to come back later ('busy').
 */
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import { BcryptWorker } from './bcrypt-worker.js';
import { FairQueue, QueueAborted, QueueFull } from './fair-queue.js';
import type { WebSettings } from './web-config.js';

export type AuthResult = 'ok' | 'missing' | 'malformed' | 'denied' | 'busy';

/** Who asks: the client address (its own turn in the queue), and whether it still waits. */
export interface AuthClient {
  address: string;
  signal?: AbortSignal;
}

const REALM = 'pg-maintd';
/**
 * Verified passwords kept per user: one hash admits one password, but bcrypt reads only its first
 * 72 bytes, so a few spellings may verify; more than this and the oldest is checked again.
 */
const PER_USER_MAX = 4;
/** A Prometheus pair and a person: a few checks at once; a client with more is flooding. */
const MAX_WAITING_PER_CLIENT = 4;
/** Many clients at once (a spread flood): at ~100 ms a check, this is seconds of waiting already. */
const MAX_WAITING = 64;
/** bcrypt may take half of one core, whatever comes in. */
const BCRYPT_SHARE = 0.5;
const B64 = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export class Authenticator {
  #users = new Map<string, string>();
  #tokenDigest: Buffer | undefined;
  #dummy = dummyHash(10);
  /**
   * Per user, digests of (user, hash, password) that verified: a scrape skips bcrypt and compares
   * digests in constant time instead. Kept across reloads: a digest covers the hash it matched, so
   * a changed hash never matches it; users no longer configured are dropped.
   */
  #verified = new Map<string, Buffer[]>();
  #queue = new FairQueue({ perClient: MAX_WAITING_PER_CLIENT, total: MAX_WAITING, share: BCRYPT_SHARE });
  #bcrypt: BcryptWorker;

  constructor(onWorkerFailure?: (err: Error) => void) {
    this.#bcrypt = new BcryptWorker(onWorkerFailure);
  }

  /** Time bcrypt has taken so far, in ms. */
  get bcryptMs(): number {
    return this.#queue.busyMs;
  }

  update(s: Pick<WebSettings, 'users' | 'tokenDigest'>): void {
    this.#users = new Map(s.users);
    this.#tokenDigest = s.tokenDigest;
    for (const user of this.#verified.keys()) if (!this.#users.has(user)) this.#verified.delete(user);
    const costs = [...s.users.values()].map((h) => Number(h.split('$')[2]));
    this.#dummy = dummyHash(costs.length ? Math.max(...costs) : 10);
  }

  get enabled(): boolean {
    return this.#users.size > 0 || this.#tokenDigest !== undefined;
  }

  /** The schemes in use, as named in the log line of the server's start. */
  get schemes(): string[] {
    return [...(this.#users.size ? ['basic'] : []), ...(this.#tokenDigest ? ['bearer'] : [])];
  }

  /** WWW-Authenticate values of a 401. */
  get challenges(): string[] {
    return this.schemes.map((s) => `${s === 'basic' ? 'Basic' : 'Bearer'} realm="${REALM}"`);
  }

  /**
   * 'ok' when the request needs no slow check: authentication is off, the bearer token matches, or
   * these basic credentials verified before. Undefined otherwise (then verify() decides).
   */
  known(header: string | undefined): 'ok' | undefined {
    if (!this.enabled) return 'ok';
    const m = header === undefined ? null : /^([A-Za-z]+) +(\S+) *$/.exec(header);
    if (!m) return undefined;
    const scheme = m[1]!.toLowerCase();
    if (scheme === 'bearer' && this.#tokenDigest) return this.#bearer(m[2]!) === 'ok' ? 'ok' : undefined;
    if (scheme !== 'basic' || !this.#users.size) return undefined;
    const c = credentials(m[2]!);
    if (!c) return undefined;
    const stored = this.#users.get(c.user);
    return stored !== undefined && this.#seen(c.user, digest(c.user, stored, c.password)) ? 'ok' : undefined;
  }

  async verify(header: string | undefined, client: AuthClient): Promise<AuthResult> {
    if (!this.enabled) return 'ok';
    if (!header) return 'missing';
    const m = /^([A-Za-z]+) +(\S+) *$/.exec(header);
    if (!m) return 'malformed';
    const scheme = m[1]!.toLowerCase();
    if (scheme === 'basic' && this.#users.size) return this.#basic(m[2]!, client);
    if (scheme === 'bearer' && this.#tokenDigest) return this.#bearer(m[2]!);
    return 'denied';
  }

  /** Refuses checks still waiting and stops the worker. */
  async close(): Promise<void> {
    this.#queue.close();
    await this.#bcrypt.close();
  }

  async #basic(encoded: string, client: AuthClient): Promise<AuthResult> {
    const c = credentials(encoded);
    if (!c) return 'malformed';
    const { user, password } = c;
    const stored = this.#users.get(user);
    const hash = stored ?? this.#dummy;
    const key = digest(user, hash, password);
    if (stored !== undefined && this.#seen(user, key)) return 'ok';
    let match: boolean;
    try {
      match = await this.#queue.run(
        client.address,
        () => this.#bcrypt.compare(password, hash),
        client.signal,
      );
    } catch (err) {
      if (err instanceof QueueFull) return 'busy';
      if (err instanceof QueueAborted) return 'denied'; // nobody is left to answer
      throw err;
    }
    if (!match || stored === undefined || this.#users.get(user) !== stored) return 'denied';
    // only successes: a wrong password costs bcrypt every time
    const digests = this.#verified.get(user) ?? [];
    if (!this.#seen(user, key)) digests.push(key);
    if (digests.length > PER_USER_MAX) digests.shift();
    this.#verified.set(user, digests);
    return 'ok';
  }

  /** Whether `key` is among the user's verified digests; compares with each, in constant time. */
  #seen(user: string, key: Buffer): boolean {
    let hit = false;
    for (const d of this.#verified.get(user) ?? []) hit = timingSafeEqual(d, key) || hit;
    return hit;
  }

  #bearer(token: string): AuthResult {
    // digests of equal length: the comparison takes the same time whatever the token's length
    return timingSafeEqual(sha256(token), this.#tokenDigest!) ? 'ok' : 'denied';
  }
}

/** user:password of a basic credential, or undefined when it is not one. */
function credentials(encoded: string): { user: string; password: string } | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return undefined;
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** What a verified credential is remembered by: never the password itself. */
function digest(user: string, hash: string, password: string): Buffer {
  return sha256(JSON.stringify([user, hash, password]));
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A well-formed bcrypt hash no password matches; comparing against it costs what a real one does. */
function dummyHash(cost: number): string {
  let tail = '';
  for (let i = 0; i < 53; i++) tail += B64[randomInt(B64.length)];
  return `$2b$${String(cost).padStart(2, '0')}$${tail}`;
}
