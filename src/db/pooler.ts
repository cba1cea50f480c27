/**
 * A transaction-mode pooler (PgBouncer with pool_mode=transaction, Supabase's Supavisor on port
 * 6543) between pg-maintd and PostgreSQL. It hands each transaction to whichever server process is
 * free, so what lives in a session breaks there in confusing ways: advisory locks (migrations), the
 * settings pg-maintd gives every session, pg_dump's snapshot, replication. Found by the address
 * (cheap, a guess) and by a probe (two statements, proof).
 */
import type { Logger } from '../log/logger.js';
import { DbPool, type PoolSettings } from './pool.js';
import type { ConnectionTarget } from '../core/database-url.js';

/** Rounds of the probe's three statements before it says nothing was proven. */
const PROBE_ROUNDS = 20;

export interface PoolerFinding {
  /** What was seen: the address, or the server processes the probe's statements ran in. */
  found: string;
  /** Proven by the probe, not guessed from the address. */
  proven: boolean;
}

export const POOLER_WHY =
  'a transaction-mode pooler hands each transaction to any free server process, so what pg-maintd keeps in a session is lost between statements: advisory locks (migrations), the settings it gives every session (search_path, timeouts), pg_dump’s consistent snapshot, replication';

export function poolerFix(target: ConnectionTarget): string[] {
  const supabase = /\.pooler\.supabase\.com$/i.test(target.host);
  return supabase
    ? [
        'use the direct connection (db.<project-ref>.supabase.co, port 5432), or the pooler in session mode (the same pooler host, port 5432), in DATABASE_URL',
      ]
    : [
        'connect pg-maintd straight to PostgreSQL (usually port 5432) in DATABASE_URL, or through a pooler in session mode',
      ];
}

/** The address of a transaction-mode pooler as commonly deployed: Supabase's port 6543. */
export function poolerByAddress(target: ConnectionTarget): string | undefined {
  if (target.port !== 6543) return undefined;
  return /\.pooler\.supabase\.com$/i.test(target.host)
    ? `${target.host}:6543 is Supabase's transaction-mode pooler`
    : `port 6543 is where transaction-mode poolers (Supabase's Supavisor, PgBouncer) usually listen`;
}

/**
 * Two sessions, three statements: two sessions that share a server process, or one session whose
 * statements run in two, are behind a transaction pooler; neither happens on a direct connection or
 * in session mode. Undefined when nothing was proven (or the probe could not connect: the caller's
 * own connections report that).
 */
export async function probeTransactionPooler(
  settings: PoolSettings,
  logger: Logger,
): Promise<PoolerFinding | undefined> {
  // no startup options: a pooler that refuses them (PgBouncer) still lets the probe in
  const pool = new DbPool(settings, {
    name: 'pooler-probe',
    // a one-off at start-up, told apart from the daemon's lasting sessions in pg_stat_activity
    applicationName: 'pg-maintd-pooler-probe',
    max: 2,
    min: 0,
    acquireTimeoutMs: 10_000,
    queryTimeoutMs: 10_000,
    bare: true,
    logger,
  });
  try {
    const a = await pool.connect();
    try {
      const b = await pool.connect();
      try {
        const pid = async (c: typeof a) =>
          (await c.query<{ pid: number }>('SELECT pg_catalog.pg_backend_pid() AS pid')).rows[0]!.pid;
        // Which server process a pooler hands out depends on what else runs through it at that
        // moment: one round may show nothing. On a direct connection no round ever does, so a few
        // rounds cost a few milliseconds there and make the proof near certain behind a pooler.
        for (let round = 0; round < PROBE_ROUNDS; round++) {
          const a1 = await pid(a);
          const b1 = await pid(b);
          const a2 = await pid(a);
          if (a1 === b1)
            return {
              proven: true,
              found: `two sessions ran their statements in one server process (pid ${a1})`,
            };
          if (a1 !== a2)
            return {
              proven: true,
              found: `one session's statements ran in two server processes (pid ${a1}, then ${a2})`,
            };
        }
        return undefined;
      } finally {
        b.release();
      }
    } finally {
      a.release();
    }
  } catch {
    return undefined;
  } finally {
    await pool.stop();
  }
}

/** The probe's proof, else the address's guess. */
export async function detectTransactionPooler(
  settings: PoolSettings,
  target: ConnectionTarget,
  logger: Logger,
): Promise<PoolerFinding | undefined> {
  const probed = await probeTransactionPooler(settings, logger);
  if (probed) return probed;
  const guessed = poolerByAddress(target);
  return guessed ? { proven: false, found: guessed } : undefined;
}
