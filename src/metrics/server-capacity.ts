/**
 * How many connections the metrics poller may hold, given how full the server is: a monitoring agent
 * must leave the server's last slots to the application, so near max_connections it polls with
 * fewer connections (down to one), never more. CapacityLimit keeps that number as the server's free
 * slots change; the budget (connection-budget.ts) hands out connections under it.
 */
import type pg from 'pg';
import { classify } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import { errorMessage } from '../core/errors.js';

/**
 * The slots open to non-superusers (reserved_connections exists from PostgreSQL 16; NULL before) and
 * the client backends that take them. A role without pg_read_all_stats sees other roles' sessions
 * without their backend_type: those count too (autovacuum workers among them), which errs on the
 * side of fewer connections.
 */
const CAPACITY_SQL = `
  SELECT current_setting('max_connections')::int
         - current_setting('superuser_reserved_connections')::int
         - coalesce(current_setting('reserved_connections', true)::int, 0) AS slots,
         (SELECT count(*)::int FROM pg_stat_activity
           WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL)) AS used`;

export interface ServerCapacity {
  /** Connections the server allows non-superusers: max_connections less the reserved slots. */
  slots: number;
  /** Client connections open now, the poller's own included. */
  used: number;
}

export async function readCapacity(client: pg.ClientBase): Promise<ServerCapacity> {
  const r = (await client.query<ServerCapacity>(CAPACITY_SQL)).rows[0]!;
  return { slots: r.slots, used: r.used };
}

/** Free slots the poller leaves to others: a tenth of the server's slots, at least three. */
export function marginOf(slots: number): number {
  return Math.max(3, Math.ceil(slots / 10));
}

/**
 * The connections the poller may hold now: METRICS_MAX_CONNECTIONS while the server has room, fewer
 * when taking them would leave less than the margin free, and never fewer than one (metrics that stop
 * altogether when the server is busiest help nobody).
 *
 * @param own the poller's connections open when `c` was read (they count in c.used, and are the
 *   poller's to keep)
 */
export function budgetFor(max: number, c: ServerCapacity, own: number): number {
  const others = Math.max(0, c.used - own);
  return Math.max(1, Math.min(max, c.slots - others - marginOf(c.slots)));
}

export interface CapacityLimitOptions {
  /** METRICS_MAX_CONNECTIONS. */
  max: number;
  /** The server's free slots are read again at most this often (on a main-database connection). */
  everyMs: number;
  logger: Logger;
  /** The poller's connections open now: they count in the server's, and are the poller's to keep. */
  own(): number;
  /** The limit was set (changed or not): the budget serves its waiters under it. */
  changed(): void;
}

/**
 * The connections the poller may hold now: METRICS_MAX_CONNECTIONS, or fewer near the server's
 * limit; one until the first look at the server, and one after the server refused a connection for
 * want of slots, until the next look.
 */
export class CapacityLimit {
  readonly max: number;
  readonly #o: CapacityLimitOptions;
  #limit = 1;
  #at = 0;
  #reading: Promise<void> | undefined;
  /** Whether the limit is below METRICS_MAX_CONNECTIONS (said once when it goes back up). */
  #reduced = false;

  constructor(o: CapacityLimitOptions) {
    this.max = o.max;
    this.#o = o;
  }

  get value(): number {
    return this.#limit;
  }

  /** Whether the server's free slots are due for another look. */
  get stale(): boolean {
    return performance.now() - this.#at >= this.#o.everyMs || this.#at === 0;
  }

  /** Looks at the server's free slots on `client` (a connection of the poller's, to the main database). */
  async read(client: pg.PoolClient): Promise<void> {
    // one look at a time: the others go on with the budget as it is
    if (this.#reading) return;
    this.#reading = (async () => {
      try {
        const c = await readCapacity(client);
        this.#at = performance.now();
        const limit = budgetFor(this.max, c, this.#o.own());
        this.#set(limit, { slots: c.slots, used: c.used, margin: marginOf(c.slots) });
      } catch (err) {
        // the poll on this connection says what is wrong; the budget stays as it is
        this.#o.logger.debug({ err: { message: errorMessage(err) } }, 'cannot read the server’s free slots');
      }
    })();
    try {
      await this.#reading;
    } finally {
      this.#reading = undefined;
    }
  }

  /** The server refused a connection for want of slots: one connection, until the next look. */
  refused(err: unknown): void {
    this.#at = 0;
    this.#set(1, { refused: classify(err).code ?? 'too_many_connections' });
  }

  #set(limit: number, fields: Record<string, unknown>) {
    const was = this.#limit;
    this.#limit = limit;
    const reduced = limit < this.max;
    const said = { ...fields, budget: limit, max: this.max };
    // said when it shrinks (or when the first look finds the server near its limit), and once when
    // it is back to METRICS_MAX_CONNECTIONS; the budget before the first look (one) is not news
    if (reduced && (limit !== was || !this.#reduced))
      this.#o.logger.warn(
        said,
        `the server is near its connection limit: metrics poll with ${limit} of METRICS_MAX_CONNECTIONS ${this.max} connections`,
      );
    else if (!reduced && this.#reduced)
      this.#o.logger.info(said, 'the server has room again: metrics poll with every connection');
    this.#reduced = reduced;
    this.#o.changed();
  }
}
