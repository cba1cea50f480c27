/**
 * While a migration statement runs, who it waits for: pg_blocking_pids() of the runner's backend,
 * polled on a second connection. A statement that waits past MIGRATE_LOCK_TIMEOUT is cancelled by
 * the server and the session that blocked it is gone from view by then, so the last blockers seen
 * are kept for the error. A wait that goes on (say with MIGRATE_LOCK_TIMEOUT=0) is reported while
 * it lasts, so the daemon can name the blocker meanwhile; short waits (for a moment's transaction
 * of the application, or of pg-maintd's own poller) are not.
 */
import type { DbPool } from '../db/pool.js';
import { blockingSessions, type SessionInfo } from '../db/sessions.js';

/** The first look comes soon, so a statement that gives up at a short MIGRATE_LOCK_TIMEOUT still names its blocker. */
const FIRST_MS = 100;
const EVERY_MS = 1000;
/** A wait is reported as it goes on once the statement has run this long. */
const REPORT_AFTER_MS = 2000;

export interface BlockerWatch {
  /** The sessions seen blocking the statement most recently (empty if none was seen). */
  readonly last: SessionInfo[];
  stop(): void;
}

export function watchBlockers(
  pool: DbPool,
  pid: number | undefined,
  onBlocked: (sessions: SessionInfo[]) => void,
): BlockerWatch {
  const watch = { last: [] as SessionInfo[], stop: () => undefined as void };
  if (pid === undefined) return watch;
  let stopped = false;
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const look = async () => {
    const client = await pool.connect().catch(() => undefined);
    if (!client) return;
    try {
      const sessions = await blockingSessions(client, pid);
      if (!stopped && sessions.length) {
        watch.last = sessions;
        if (performance.now() - started >= REPORT_AFTER_MS) onBlocked(sessions);
      }
    } catch {
      // a look that fails (the connection dropped) only leaves the last sighting in place
    } finally {
      client.release();
    }
  };
  const next = (ms: number) => {
    timer = setTimeout(() => void look().finally(() => !stopped && next(EVERY_MS)), ms);
    timer.unref();
  };
  next(FIRST_MS);
  watch.stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  return watch;
}
