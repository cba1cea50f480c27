/**
 * Readiness: `SELECT 1` (the seed guide's checkConnection) on a one-connection pool of its own,
 * run in the background every READYZ_INTERVAL with READYZ_TIMEOUT. /readyz answers from the last
 * result, so it answers at once even when the database hangs, and a flood of probes costs nothing.
 * /readyz is open to anyone who can reach the port, so it says why in a word (a category), never
 * the server's error text, which names hosts, users and databases: that goes to the log.
 */
import { Service } from '../lifecycle/service.js';
import type { DbPool } from '../db/pool.js';
import { classify, explainConnectionError, type ErrorKind } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import { errorMessage } from '../core/errors.js';

/** Why not ready, in a word. */
export type NotReadyReason =
  | 'not_checked_yet'
  | 'shutting_down'
  | 'unreachable'
  | 'auth'
  | 'tls'
  | 'timeout'
  | 'database_missing'
  | 'permission_denied'
  | 'too_many_connections'
  | 'insufficient_resources'
  | 'starting'
  | 'error';

const REASONS: Partial<Record<ErrorKind, NotReadyReason>> = {
  connection_refused: 'unreachable',
  connection_lost: 'unreachable',
  host_unknown: 'unreachable',
  timeout: 'timeout',
  query_canceled: 'timeout', // statement_timeout on the check itself
  auth_failed: 'auth',
  password_missing: 'auth',
  tls: 'tls',
  database_missing: 'database_missing',
  permission_denied: 'permission_denied',
  too_many_connections: 'too_many_connections',
  insufficient_resources: 'insufficient_resources',
  server_starting: 'starting',
};

function notReadyReason(err: unknown): NotReadyReason {
  return REASONS[classify(err).kind] ?? 'error';
}

export interface ReadinessState {
  ready: boolean;
  reason?: NotReadyReason;
  checkedAt?: string;
  /** Since when the current state holds. */
  since: string;
}

export class ReadinessProbe extends Service {
  readonly name = 'readiness-probe';
  #state: ReadinessState = { ready: false, reason: 'not_checked_yet', since: new Date().toISOString() };
  #lastCheck = 0;
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #draining = false;
  /** The error of the last failed check, for callers that explain it. */
  lastError: unknown;

  constructor(
    private readonly pool: DbPool,
    private readonly opts: {
      intervalMs: number;
      timeoutMs: number;
      logger: Logger;
      /** Told the outcome of every check (the metrics poller's pg_up follows it). */
      onResult?: (ok: boolean) => void;
    },
  ) {
    super();
  }

  protected async onStart(): Promise<void> {
    void this.checkNow(); // not awaited: a hanging database must not hold up start-up
    this.#timer = setInterval(() => void this.checkNow(), this.opts.intervalMs);
    this.#timer.unref();
  }

  protected async onStop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#inFlight;
  }

  /** Once draining starts, readiness fails so load balancers stop sending work. */
  markDraining(): void {
    this.#draining = true;
  }

  state(): ReadinessState {
    if (this.#draining) return { ready: false, reason: 'shutting_down', since: this.#state.since };
    // A check that has not completed for several intervals is itself a failure (a hung connection).
    const staleMs = performance.now() - this.#lastCheck;
    const limit = this.opts.intervalMs * 2 + this.opts.timeoutMs;
    if (this.#state.ready && this.#lastCheck > 0 && staleMs > limit) {
      return { ready: false, reason: 'timeout', since: this.#state.since };
    }
    return this.#state;
  }

  checkNow(): Promise<void> {
    this.#inFlight ??= this.#check().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  async #check(): Promise<void> {
    let reason: NotReadyReason | undefined;
    let detail: string | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              Object.assign(new Error(`no answer within ${this.opts.timeoutMs} ms`), { code: 'ETIMEDOUT' }),
            ),
          this.opts.timeoutMs,
        );
      });
      await Promise.race([this.pool.query('SELECT 1'), timeout]);
    } catch (err) {
      this.lastError = err;
      const { kind, code } = classify(err);
      reason = notReadyReason(err);
      detail = `${kind}${code ? ` ${code}` : ''}: ${errorMessage(err)}`;
    } finally {
      clearTimeout(timer);
    }
    const first = this.#lastCheck === 0;
    this.#lastCheck = performance.now();
    const ready = reason === undefined;
    const now = new Date().toISOString();
    // said when it changes (a new reason too: the wrong password after the server came back)
    if (first || ready !== this.#state.ready || reason !== this.#state.reason) {
      if (ready) this.opts.logger.info({ check: 'readyz' }, 'database reachable: ready');
      else {
        const { hint } = explainConnectionError(this.lastError, this.pool.description);
        this.opts.logger.warn(
          { check: 'readyz', reason, detail, database: this.pool.description, hint },
          `database unreachable: not ready (/readyz answers 503, reason ${reason})`,
        );
      }
    }
    this.opts.onResult?.(ready);
    this.#state = {
      ready,
      ...(reason ? { reason } : {}),
      checkedAt: now,
      since: ready === this.#state.ready ? this.#state.since : now,
    };
  }
}
