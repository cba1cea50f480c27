/**
 * How many connections the metrics poller may hold, given how full the server is: a monitoring agent
 * must leave the server's last slots to the application, so near max_connections it polls with
 * fewer connections (down to one), never more.
 */
import type pg from 'pg';

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
