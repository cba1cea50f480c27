/**
 * Credentials for /metrics: basic auth against bcrypt hashes (exporter-toolkit's basic_auth_users)
 * and a bearer token. Neither the time taken nor the answer tells an unknown user from a wrong
 * password: an unknown user is checked against a dummy hash of the same cost.
 */
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import type { WebSettings } from './web-config.js';

export type AuthResult = 'ok' | 'missing' | 'malformed' | 'denied';

const REALM = 'pg-maintd';
const CACHE_MAX = 256;
const B64 = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export class Authenticator {
  #users = new Map<string, string>();
  #tokenDigest: Buffer | undefined;
  #dummy = dummyHash(10);
  /** Digests of (user, hash, password) that verified: a scrape every few seconds skips bcrypt. */
  #verified = new Set<string>();
  /** One bcrypt at a time (as exporter-toolkit): many at once would stall the event loop, /healthz too. */
  #bcryptQueue: Promise<unknown> = Promise.resolve();
  #pending = 0;

  update(s: Pick<WebSettings, 'users' | 'tokenDigest'>): void {
    this.#users = new Map(s.users);
    this.#tokenDigest = s.tokenDigest;
    this.#verified.clear();
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

  async verify(header: string | undefined): Promise<AuthResult> {
    if (!this.enabled) return 'ok';
    if (!header) return 'missing';
    const m = /^([A-Za-z]+) +(\S+) *$/.exec(header);
    if (!m) return 'malformed';
    const scheme = m[1]!.toLowerCase();
    if (scheme === 'basic' && this.#users.size) return this.#basic(m[2]!);
    if (scheme === 'bearer' && this.#tokenDigest) return this.#bearer(m[2]!);
    return 'denied';
  }

  async #basic(encoded: string): Promise<AuthResult> {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return 'malformed';
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return 'malformed';
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const stored = this.#users.get(user);
    const hash = stored ?? this.#dummy;
    const key = sha256(JSON.stringify([user, hash, password])).toString('hex');
    if (stored !== undefined && this.#verified.has(key)) return 'ok';
    const match = await this.#compare(password, hash);
    if (!match || stored === undefined || this.#users.get(user) !== stored) return 'denied';
    if (this.#verified.size >= CACHE_MAX) this.#verified.delete(this.#verified.values().next().value!);
    this.#verified.add(key); // only successes: a wrong password costs bcrypt every time
    return 'ok';
  }

  #compare(password: string, hash: string): Promise<boolean> {
    // a flood of wrong credentials must not queue a scrape behind seconds of bcrypt: beyond a few
    // waiting, more are refused at once (a known user's verified password skips bcrypt anyway)
    if (this.#pending >= MAX_PENDING_COMPARES) return Promise.resolve(false);
    this.#pending++;
    const run = this.#bcryptQueue
      .then(() => bcrypt.compare(password, hash))
      .catch(() => false)
      .finally(() => this.#pending--);
    this.#bcryptQueue = run;
    return run;
  }

  #bearer(token: string): AuthResult {
    // digests of equal length: the comparison takes the same time whatever the token's length
    return timingSafeEqual(sha256(token), this.#tokenDigest!) ? 'ok' : 'denied';
  }
}

/** bcrypt compares waiting at most (about 70 ms each at cost 10). */
const MAX_PENDING_COMPARES = 8;

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A well-formed bcrypt hash no password matches; comparing against it costs what a real one does. */
function dummyHash(cost: number): string {
  let tail = '';
  for (let i = 0; i < 53; i++) tail += B64[randomInt(B64.length)];
  return `$2b$${String(cost).padStart(2, '0')}$${tail}`;
}
