/**
 * The migration runner's sessions: the one that holds the migration lock and runs the migrations
 * (with a second connection to watch and cancel it), and a plain one for the read-only commands.
 *
 * The lock is a session-level advisory lock, taken by polling pg_try_advisory_lock (a blocked
 * pg_advisory_lock would deadlock against CREATE INDEX CONCURRENTLY, which waits for every older
 * transaction, the waiting runner's included). It may stay an advisory lock, unlike the jobs'
 * leases: the table of a lease may not exist yet. Any role may take it, so its holder is named
 * (pid, role, application_name, client), and so are the sessions a migration statement waits for.
 */
import type pg from 'pg';
import { advisoryLockHolders, advisoryUnlock, tryAdvisoryLock } from '../db/advisory-lock.js';
import { DbPool, type PoolSettings } from '../db/pool.js';
import { sessionsText, type SessionInfo } from '../db/sessions.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import { watchBlockers } from './blockers.js';
import { MigrationError, type BlockedReason } from './migration-error.js';

export interface MigrateOptions {
  db: PoolSettings;
  dir: string;
  logger: Logger;
  /** How long to wait for another runner's lock (Infinity: as long as it takes). */
  lockWaitMs: number;
  /** lock_timeout of every migration statement, so DDL never queues the application behind it for long. */
  lockTimeoutMs: number;
  signal?: AbortSignal;
  /**
   * Apply only into a database that is empty (empty-database.ts) or already has a migration
   * history; any other is left alone (MigrationError 'not_empty'). The start-up migrations set it:
   * only `migrate up`, asked for by hand, builds the schema beside someone else's objects.
   */
  onlyIntoEmpty?: boolean;
  /**
   * Told who the run waits for: the migration lock's holder, or the sessions blocking a statement;
   * undefined once the wait is over. Called again every few seconds while the wait goes on.
   */
  onWait?: (wait: MigrationWait | undefined) => void;
}

export interface MigrationWait {
  reason: Extract<BlockedReason, 'lock_held' | 'lock_wait'>;
  sessions: SessionInfo[];
}

/** The runner's session: the connection holding the lock, and a second one to watch and cancel it. */
export interface RunnerSession {
  client: pg.PoolClient;
  pool: DbPool;
  pid: number | undefined;
}

const LOCK_NAME = 'migrate';

/** Runs `fn` on one session holding the migration lock. */
export async function withRunnerSession<T>(
  o: MigrateOptions,
  fn: (session: RunnerSession, waited: boolean) => Promise<T>,
): Promise<T> {
  // a bounded connect: an unreachable server is reported (and retried by the bootstrap) in seconds;
  // the second connection only watches who the runner waits for, and cancels it on shutdown
  const pool = new DbPool(o.db, {
    name: 'migrate',
    logger: o.logger,
    max: 2,
    min: 0,
    acquireTimeoutMs: 10_000,
    // a migration (a CREATE INDEX CONCURRENTLY) takes as long as it takes; what it may wait for a
    // lock is MIGRATE_LOCK_TIMEOUT, for the runner's own reads and writes too
    statementTimeoutMs: 0,
    lockTimeoutMs: o.lockTimeoutMs,
  });
  try {
    const client = await pool.connect();
    const stopCancelling = cancelOnAbort(pool, client, o);
    let locked = false;
    try {
      const waited = await acquire(client, o);
      locked = true;
      const pid = (client as unknown as { processID?: number }).processID;
      return await fn({ client, pool, pid }, waited);
    } finally {
      stopCancelling();
      if (locked) await advisoryUnlock(client, LOCK_NAME).catch(() => undefined);
      client.release();
    }
  } finally {
    await pool.stop();
  }
}

/**
 * On abort (shutdown), cancels the runner's running statement so its transaction rolls back now
 * rather than after the statement ends: a backend does not notice a vanished client while it works.
 * Repeated each second, since a cancel that lands between two statements does nothing.
 */
function cancelOnAbort(pool: DbPool, client: pg.PoolClient, o: MigrateOptions): () => void {
  const pid = (client as unknown as { processID?: number }).processID;
  let timer: NodeJS.Timeout | undefined;
  const cancel = () => {
    pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
  };
  const onAbort = () => {
    o.logger.warn('shutting down: cancelling the running migration statement; it is rolled back');
    cancel();
    timer = setInterval(cancel, 1000);
    timer.unref();
  };
  if (pid === undefined || !o.signal) return () => undefined;
  if (o.signal.aborted) onAbort();
  else o.signal.addEventListener('abort', onAbort, { once: true });
  return () => {
    o.signal?.removeEventListener('abort', onAbort);
    clearInterval(timer);
  };
}

/** How often the holder of the migration lock is looked up again while the runner waits. */
const HOLDER_LOOKUP_MS = 5000;

async function acquire(client: pg.PoolClient, o: MigrateOptions): Promise<boolean> {
  // the monotonic clock: a wall clock that jumps must not end (or stretch) the wait
  const until = performance.now() + o.lockWaitMs;
  let waited = false;
  let holders: SessionInfo[] = [];
  let lookedAt = -Infinity;
  for (;;) {
    if (await tryAdvisoryLock(client, LOCK_NAME)) {
      if (waited) o.onWait?.(undefined);
      return waited;
    }
    if (performance.now() - lookedAt >= HOLDER_LOOKUP_MS) {
      holders = await advisoryLockHolders(client, LOCK_NAME);
      lookedAt = performance.now();
      o.onWait?.({ reason: 'lock_held', sessions: holders });
      if (!waited && !o.onWait)
        o.logger.info(
          { holders },
          `another session holds the migration lock; waiting for it: ${sessionsText(holders)}`,
        );
    }
    waited = true;
    if (o.signal?.aborted) throw o.signal.reason as Error;
    if (performance.now() > until)
      throw new MigrationError(
        'lock_held',
        `another session held the migration lock for over ${o.lockWaitMs} ms: ${sessionsText(holders)}`,
        {
          hint: 'if it is another pg-maintd migrating, let it finish; if not, end that session (SELECT pg_terminate_backend(pid)), or raise MIGRATE_LOCK_WAIT',
          exitCode: EXIT.UNAVAILABLE,
          sessions: holders,
        },
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Runs a migration statement, watching who it waits for. A wait that ends in success is reported
 * as over; one that ends in an error leaves that to the caller (it is usually retried).
 */
export async function watched<T>(
  session: RunnerSession,
  o: MigrateOptions,
  run: () => Promise<T>,
): Promise<T> {
  let waiting = false;
  const watch = watchBlockers(session.pool, session.pid, (sessions) => {
    waiting = true;
    o.onWait?.({ reason: 'lock_wait', sessions });
  });
  let result: T;
  try {
    result = await run();
  } catch (err) {
    if (err && typeof err === 'object') (err as { blockers?: SessionInfo[] }).blockers = watch.last;
    throw err;
  } finally {
    watch.stop();
  }
  if (waiting) o.onWait?.(undefined);
  return result;
}

/** A one-connection session for the read-only commands (status, verify); no lock taken. */
export async function withReadSession<T>(
  o: MigrateOptions,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const pool = new DbPool(o.db, {
    name: 'migrate',
    logger: o.logger,
    max: 1,
    min: 0,
    statementTimeoutMs: 30_000,
    lockTimeoutMs: o.lockTimeoutMs,
  });
  try {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  } finally {
    await pool.stop();
  }
}
