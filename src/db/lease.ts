/**
 * Leases: a row (name, holder, token, acquired_at, expires_at) in pgmaintd.leases, which only
 * pg-maintd's role can write (db/lease-table.ts). Whoever holds an unexpired lease runs the job it
 * names; no transaction or session is held while the job runs, so nothing an idle-session timeout
 * or a dropped connection ends can release it behind the holder's back.
 *
 * - Acquired with one atomic statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE expired), with a
 *   random token per acquisition. Times come from the database's clock, never the local one.
 * - A lease whose expiry lies further ahead than any pg-maintd sets (LEASE_TTL_MAX_MS) is void and taken
 *   over, with a warning: only a bug or a hand-edited row can make one.
 * - Renewed every TTL/3 (sooner after a failed attempt). It is lost when a renewal finds the row
 *   gone, taken or expired, or when the local deadline passes without a renewal: the monotonic time
 *   the last good renewal was sent, plus the TTL. That deadline comes before the expiry the database
 *   recorded (stamped later, on arrival), so a holder stops before anyone else can take over.
 *   Losing it aborts `signal` with a LeaseLostError.
 * - Released when the work ends: the row, if still ours, expires at once (it stays, with the last
 *   slot whose work was done: a replica that comes after the leader finished skips that slot, on
 *   the database's word, not the store's, which anyone who can write to the store could forge).
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { LEASE_TTL_MAX_MS } from '../config/fields.js';
import type { Logger } from '../log/logger.js';
import { LEASE_TABLE } from './lease-table.js';
import type { DbPool } from './pool.js';
import { cleanName } from './sessions.js';
import { errorMessage } from '../core/errors.js';

/** The job's work was stopped because this replica no longer holds its lease. */
export class LeaseLostError extends Error {
  constructor(
    readonly lease: string,
    readonly why: string,
  ) {
    super(`lost the lease ${lease}: ${why}`);
    this.name = 'LeaseLostError';
  }
}

/** Who holds a lease, as read from the table. */
export interface LeaseHolder {
  /** "host pid N" of the pg-maintd process. */
  holder: string;
  acquiredAt: Date;
  expiresAt: Date;
}

export interface LeaseOptions {
  ttlMs: number;
  logger: Logger;
}

const interval = (ms: number) => `${Math.round(ms)} milliseconds`;

/**
 * Timeouts of the sessions that take and renew leases (whatever the role or database sets): a lock
 * another role holds on the table, or a server that stalls, fails the statement in seconds instead of
 * wedging the job behind it.
 */
export const LEASE_SESSION = { statementTimeoutMs: 30_000, lockTimeoutMs: 5000 } as const;

const ACQUIRE_SQL = `
  WITH prev AS (
    SELECT holder, expires_at > pg_catalog.clock_timestamp() + $5::interval AS void
      FROM ${LEASE_TABLE} WHERE name = $1::text
  )
  INSERT INTO ${LEASE_TABLE} AS l (name, holder, token, acquired_at, expires_at)
  VALUES ($1::text, $2::text, $3::text, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp() + $4::interval)
  ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder, token = excluded.token,
        acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
    WHERE l.expires_at <= pg_catalog.clock_timestamp()
       OR l.expires_at > pg_catalog.clock_timestamp() + $5::interval
  RETURNING (SELECT void FROM prev) AS void, (SELECT holder FROM prev) AS prev_holder`;

const HOLDER_SQL = `SELECT holder, acquired_at, expires_at FROM ${LEASE_TABLE} WHERE name = $1::text`;

const RENEW_SQL = `
  UPDATE ${LEASE_TABLE} SET expires_at = pg_catalog.clock_timestamp() + $3::interval
   WHERE name = $1::text AND token = $2::text AND expires_at > pg_catalog.clock_timestamp()
  RETURNING expires_at`;

const RELEASE_SQL = `
  UPDATE ${LEASE_TABLE} SET expires_at = pg_catalog.clock_timestamp(), token = ''
   WHERE name = $1::text AND token = $2::text`;

const DONE_SQL = `
  UPDATE ${LEASE_TABLE} SET done_slot = GREATEST(done_slot, $3::timestamptz)
   WHERE name = $1::text AND token = $2::text`;

const LAST_DONE_SQL = `SELECT done_slot FROM ${LEASE_TABLE} WHERE name = $1::text`;

/** Takes the lease `name` if nobody holds it: the held lease, or who holds it now. */
export async function acquireLease(
  pool: DbPool,
  name: string,
  o: LeaseOptions,
): Promise<{ lease: Lease } | { heldBy: LeaseHolder }> {
  // one retry: a holder that released between our two statements is no holder to report
  for (let attempt = 0; ; attempt++) {
    const token = randomBytes(16).toString('hex');
    const sent = performance.now();
    const r = await pool.query<{ void: boolean | null; prev_holder: string | null }>(ACQUIRE_SQL, [
      name,
      `${hostname()} pid ${process.pid}`,
      token,
      interval(o.ttlMs),
      interval(LEASE_TTL_MAX_MS),
    ]);
    const row = r.rows[0];
    if (row) {
      if (row.void)
        o.logger.warn(
          { lease: name, previousHolder: cleanName(row.prev_holder) },
          'took over a lease whose expiry lay further ahead than any pg-maintd sets (a hand-edited row?)',
        );
      return { lease: new Lease(pool, name, token, sent, o) };
    }
    const h = await pool.query<{ holder: string; acquired_at: Date; expires_at: Date }>(HOLDER_SQL, [name]);
    const held = h.rows[0];
    if (held)
      return {
        heldBy: {
          holder: cleanName(held.holder) ?? '?',
          acquiredAt: held.acquired_at,
          expiresAt: held.expires_at,
        },
      };
    if (attempt > 0) throw new Error(`the lease ${name} could be neither taken nor read`);
  }
}

/** A lease this process holds; renewed until release() or until it is lost. */
export class Lease {
  readonly #abort = new AbortController();
  #deadline: number;
  #renewTimer: NodeJS.Timeout | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  #done = false;
  #warned = false;

  constructor(
    private readonly pool: DbPool,
    readonly name: string,
    private readonly token: string,
    sentAt: number,
    private readonly o: LeaseOptions,
  ) {
    this.#deadline = sentAt + o.ttlMs;
    this.#armDeadline();
    this.#scheduleRenewal(sentAt + o.ttlMs / 3 - performance.now());
  }

  /** Aborted with a LeaseLostError when the lease is lost. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get lost(): LeaseLostError | undefined {
    return this.#abort.signal.aborted ? (this.#abort.signal.reason as LeaseLostError) : undefined;
  }

  /** The last slot whose work a holder of this lease recorded as done, if any. */
  async lastDone(): Promise<Date | undefined> {
    const r = await this.pool.query<{ done_slot: Date | null }>(LAST_DONE_SQL, [this.name]);
    return r.rows[0]?.done_slot ?? undefined;
  }

  /** Records that the work of `slot` is done; nothing when the lease is no longer ours. */
  async recordDone(slot: Date): Promise<void> {
    await this.pool.query(DONE_SQL, [this.name, this.token, slot]);
  }

  /** Stops renewing and deletes the row if it is still ours. Never throws. */
  async release(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#deadlineTimer);
    // a database that does not answer must not hold the job up: the row expires on its own
    const work = (async () => {
      await this.#renewing;
      await this.pool.query(RELEASE_SQL, [this.name, this.token]);
    })();
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.o.ttlMs)));
    await Promise.race([work, gaveUp])
      .catch((err: unknown) =>
        this.o.logger.warn(
          { lease: this.name, err: { message: errorMessage(err) } },
          'could not release the lease; it expires within LEASE_TTL',
        ),
      )
      .finally(() => clearTimeout(timer));
  }

  #scheduleRenewal(delayMs: number) {
    if (this.#done) return;
    this.#renewTimer = setTimeout(
      () => {
        this.#renewing = this.#renew(); // never rejects; release() waits for it
      },
      Math.max(0, delayMs),
    );
    this.#renewTimer.unref();
  }

  #armDeadline() {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = setTimeout(
      () => this.#lose(`not renewed within LEASE_TTL (${this.o.ttlMs} ms)`),
      Math.max(0, this.#deadline - performance.now()),
    );
    this.#deadlineTimer.unref();
  }

  async #renew(): Promise<void> {
    const sent = performance.now();
    try {
      const r = await this.pool.query(RENEW_SQL, [this.name, this.token, interval(this.o.ttlMs)]);
      if (this.#done) return;
      if (r.rowCount === 0) {
        this.#lose('the row was taken over, deleted or had expired when it was renewed');
        return;
      }
      this.#deadline = sent + this.o.ttlMs;
      this.#armDeadline();
      this.#warned = false;
      this.#scheduleRenewal(sent + this.o.ttlMs / 3 - performance.now());
    } catch (err) {
      if (this.#done) return;
      if (!this.#warned)
        this.o.logger.warn(
          { lease: this.name, err: { message: errorMessage(err) } },
          'renewing the lease failed; retrying until LEASE_TTL runs out',
        );
      this.#warned = true;
      this.#scheduleRenewal(Math.min(1000, Math.max(100, this.o.ttlMs / 10)));
    }
  }

  #lose(why: string) {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#deadlineTimer);
    const err = new LeaseLostError(this.name, why);
    this.o.logger.warn({ lease: this.name, why }, 'lease lost: stopping the work it covered');
    this.#abort.abort(err);
    // the row goes if it is still ours (a renewal that lost its race with the deadline)
    void this.pool.query(RELEASE_SQL, [this.name, this.token]).catch(() => undefined);
  }
}
