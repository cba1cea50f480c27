/**
 * MIGRATE_ON_START: the daemon applies pending migrations in the background. Nothing waits for it:
 * HTTP, metrics, backups and drills (none of which need the application schema) run from the
 * start, so a migration that cannot go on never takes monitoring and backups down with it.
 *
 * - Blocked (retried): the migration lock held by another session (waited for as long as it takes),
 *   a statement that waits for or gave up at MIGRATE_LOCK_TIMEOUT behind another session's lock or
 *   transaction, an unreachable database. Retried with backoff; the holder or the blocking session
 *   (pid, role, application_name, client) is logged at warn at most once a minute, and
 *   pgmaintd_migrations_blocked{reason} is 1.
 * - Failed (not retried as is): an applied file that changed, a failing statement, tables without a
 *   migration history, a missing privilege, unreadable files. Logged at error with the fix, and
 *   pgmaintd_migrations_failed{reason} is 1. Retrying unchanged would fail the same way (a failing
 *   concurrent index build would rebuild the index each time), so the history is re-read every few
 *   minutes instead: once it changed (`migrate baseline`, or `migrate up` by hand), the run is tried
 *   again.
 * - Skipped (by design, not retried as is): a database that holds objects of its own (outside
 *   pg-maintd's schema; an extension's do not count) and no migration history is not pg-maintd's to
 *   build the application schema in. Logged once at warn with the ways to adopt it (`migrate up`,
 *   `migrate baseline`) or to stop trying (MIGRATE_ON_START=false), and
 *   pgmaintd_migrations_skipped{reason="not_empty"} is 1; once the history changes it is tried again.
 * - On a standby (pg_is_in_recovery(), asked before each attempt) nothing is attempted: the wait is
 *   logged once, pgmaintd_migrations_blocked{reason="standby"} is 1, and the role is asked again
 *   every few seconds, so the migrations run soon after a promotion.
 * - A wrong password or database name found before the database was ever reached is what it was at
 *   start-up before: a configuration fault, reported through onFatal (the daemon stops, exit 69).
 */
import { withClusterFact } from '../db/cluster.js';
import { serverRole } from '../db/server-role.js';
import { classify, explainConnectionError } from '../db/sqlstate.js';
import { sessionsText, type SessionInfo } from '../db/sessions.js';
import { describeTarget, parseDatabaseUrl } from '../core/database-url.js';
import { errorMessage, OperatorError } from '../core/errors.js';
import { unavailableError } from '../db/unavailable.js';
import { EXIT } from '../core/exit-codes.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import type { MigrationMetrics } from './metrics.js';
import {
  BLOCKED_REASONS,
  MigrationError,
  type BlockedReason,
  type FailedReason,
  type SkippedReason,
} from './migration-error.js';
import { migrateUp, migrationStatus, type MigrateOptions, type MigrationWait } from './runner.js';

export interface BootstrapTiming {
  /** First wait before retrying a blocked run; doubled after each, up to maxRetryMs. */
  firstRetryMs: number;
  maxRetryMs: number;
  /** How often a failed run's database is re-read for a change. */
  recheckMs: number;
  /** Least time between two warnings of one kind. */
  warnEveryMs: number;
  /** How often a standby is asked whether it was promoted. */
  standbyPollMs: number;
}

const TIMING: BootstrapTiming = {
  firstRetryMs: 2000,
  maxRetryMs: 60_000,
  recheckMs: 300_000,
  warnEveryMs: 60_000,
  standbyPollMs: 5000,
};

/** Longest wait for a read of the migration history (the pending count, the re-reads after a failure). */
const STATUS_READ_MS = 30_000;

type Failure =
  | { kind: 'blocked'; reason: BlockedReason; sessions: SessionInfo[]; message: string; hint?: string }
  | { kind: 'failed'; reason: FailedReason; message: string; hint?: string }
  | { kind: 'skipped'; reason: SkippedReason; message: string; hint?: string }
  | { kind: 'fatal'; error: OperatorError };

export interface BootstrapOptions {
  /** A configuration fault found before the database was ever reached (the daemon stops). */
  onFatal?: (err: OperatorError) => void;
  timing?: Partial<BootstrapTiming>;
}

export class MigrationBootstrap extends Service {
  readonly name = 'migrations';
  readonly #abort = new AbortController();
  readonly #t: BootstrapTiming;
  readonly #lastWarn = new Map<string, number>();
  #loop: Promise<void> = Promise.resolve();
  #contacted = false;

  constructor(
    private readonly o: Omit<MigrateOptions, 'signal' | 'onWait' | 'lockWaitMs'>,
    private readonly logger: Logger,
    private readonly metrics: MigrationMetrics,
    private readonly opts: BootstrapOptions = {},
  ) {
    super();
    this.#t = { ...TIMING, ...opts.timing };
  }

  /** Settles when the background run ends: the schema is up to date, onFatal was called, or stop(). */
  get settled(): Promise<void> {
    return this.#loop;
  }

  protected async onStart(): Promise<void> {
    this.#loop = this.#run(); // never rejects
  }

  protected async onStop(): Promise<void> {
    this.#abort.abort(new Error('pg-maintd is shutting down'));
    await this.#loop;
  }

  get #signal(): AbortSignal {
    return this.#abort.signal;
  }

  async #run(): Promise<void> {
    let delay = this.#t.firstRetryMs;
    await this.#status().catch(() => undefined); // the pending count from the start, when readable
    if (this.#signal.aborted) return;
    while (!this.#signal.aborted) {
      await this.#waitWhileStandby();
      if (this.#signal.aborted) return;
      let failure: Failure;
      try {
        const r = await migrateUp({
          ...this.o,
          lockWaitMs: Infinity,
          onlyIntoEmpty: true,
          signal: this.#signal,
          onWait: (w) => this.#onWait(w),
        });
        this.metrics.setBlocked(undefined);
        this.metrics.setFailed(undefined);
        this.metrics.setSkipped(undefined);
        this.metrics.setPending(0);
        this.logger.info(
          { applied: r.applied.map((a) => a.file), repaired: r.repaired },
          r.applied.length ? 'migrations applied' : 'schema is up to date',
        );
        return;
      } catch (err) {
        if (this.#signal.aborted) {
          this.logger.warn(
            { err: { message: errorMessage(err) } },
            'start-up migrations stopped by the shutdown: a migration in flight was rolled back and not recorded; the next start applies it',
          );
          return;
        }
        failure = this.#classify(err);
      }
      if (failure.kind === 'fatal') {
        this.opts.onFatal?.(failure.error);
        return;
      }
      if (failure.kind === 'blocked') {
        this.metrics.setFailed(undefined);
        this.metrics.setSkipped(undefined);
        this.metrics.setBlocked(failure.reason);
        this.#warn(
          failure.reason,
          failure.sessions,
          `${failure.message}: retrying in ${delay / 1000} s`,
          failure.hint,
        );
        await this.#sleep(delay);
        delay = Math.min(delay * 2, this.#t.maxRetryMs);
        continue;
      }
      this.metrics.setBlocked(undefined);
      if (failure.kind === 'skipped') {
        this.metrics.setFailed(undefined);
        this.metrics.setSkipped(failure.reason);
        this.logger.warn(
          { reason: failure.reason, hint: failure.hint },
          `start-up migrations skipped: ${failure.message}; pg-maintd keeps running its other work, and looks again once the migration history changes (or at the next start)`,
        );
        await this.#waitForChange();
        delay = this.#t.firstRetryMs;
        continue;
      }
      this.metrics.setSkipped(undefined);
      this.metrics.setFailed(failure.reason);
      this.logger.error(
        { reason: failure.reason, hint: failure.hint },
        `start-up migrations stopped: ${failure.message}; pg-maintd keeps running its other work, and tries again once the migration history changes (or at the next start)`,
      );
      await this.#waitForChange();
      delay = this.#t.firstRetryMs;
    }
  }

  /**
   * Returns once the server is not a standby (or cannot be asked: the attempt that follows says
   * why), or on shutdown. A standby refuses every write, so nothing is tried there; the wait is said
   * once, and its end.
   */
  async #waitWhileStandby(): Promise<void> {
    let waited = false;
    while (!this.#signal.aborted) {
      const role = await withClusterFact(this.o.db, this.logger, serverRole);
      if (role !== 'standby') break;
      this.#contacted = true;
      if (!waited) {
        waited = true;
        this.metrics.setFailed(undefined);
        this.metrics.setSkipped(undefined);
        this.metrics.setBlocked('standby');
        this.logger.info(
          { reason: 'standby', checkEverySeconds: this.#t.standbyPollMs / 1000 },
          'the server is a standby: the start-up migrations wait for its promotion, and run then; backups, drills and metrics go on meanwhile',
        );
      }
      await this.#sleep(this.#t.standbyPollMs);
    }
    if (waited && !this.#signal.aborted) {
      this.metrics.setBlocked(undefined);
      this.logger.info('the server is no longer a standby (promoted): the start-up migrations run now');
    }
  }

  /** Reads the migrations' state (and publishes the pending count); a key that changes with the history. */
  async #status(): Promise<string> {
    // a read that hangs (a server that accepts but never answers) must hold up neither a shutdown
    // nor the migrations: it is given up after STATUS_READ_MS (the pending count stays unknown)
    const read = migrationStatus({ ...this.o, lockWaitMs: 0 });
    const rows = await new Promise<Awaited<typeof read>>((resolve, reject) => {
      const giveUp = (err: Error) => {
        cleanup();
        reject(err);
      };
      const onAbort = () => giveUp(this.#signal.reason as Error);
      const timer = setTimeout(
        () => giveUp(new Error('reading the migration history took too long')),
        STATUS_READ_MS,
      );
      const cleanup = () => {
        clearTimeout(timer);
        this.#signal.removeEventListener('abort', onAbort);
      };
      if (this.#signal.aborted) return onAbort();
      this.#signal.addEventListener('abort', onAbort, { once: true });
      void read.then(
        (r) => (cleanup(), resolve(r)),
        (err: unknown) => giveUp(err as Error),
      );
    });
    this.#contacted = true;
    this.metrics.setPending(rows.filter((r) => r.state === 'pending').length);
    return JSON.stringify(rows.map((r) => [r.version, r.state, r.appliedAt?.toISOString()]));
  }

  async #waitForChange(): Promise<void> {
    let before = await this.#status().catch(() => undefined);
    for (;;) {
      await this.#sleep(this.#t.recheckMs);
      if (this.#signal.aborted) return;
      const now = await this.#status().catch(() => undefined);
      if (now === undefined) continue;
      if (before !== undefined && now !== before) return;
      before = now;
      this.logger.debug('migration history unchanged since the failure: not retried');
    }
  }

  #onWait(w: MigrationWait | undefined) {
    if (!w) {
      this.metrics.setBlocked(undefined);
      return;
    }
    this.#contacted = true;
    this.metrics.setBlocked(w.reason);
    const who = sessionsText(w.sessions);
    if (w.reason === 'lock_held')
      this.#warn(
        w.reason,
        w.sessions,
        `the migration lock is held by ${who}: start-up migrations wait for it`,
        'if that is not another pg-maintd migrating, end it (SELECT pg_terminate_backend(pid)); the migrations then run at once',
      );
    else
      this.#warn(
        w.reason,
        w.sessions,
        `a migration statement waits for ${who}`,
        'end that session or its transaction, or wait for it to finish; MIGRATE_LOCK_TIMEOUT bounds each wait, and the migration is retried',
      );
  }

  /** At warn, at most once per warnEveryMs for each reason (the monotonic clock). */
  #warn(reason: BlockedReason, sessions: SessionInfo[], message: string, hint: string | undefined) {
    const now = performance.now();
    const last = this.#lastWarn.get(reason);
    if (last !== undefined && now - last < this.#t.warnEveryMs) return;
    this.#lastWarn.set(reason, now);
    const text =
      reason === 'unreachable'
        ? `database unreachable: migrations (MIGRATE_ON_START) wait for it (${message})`
        : message;
    this.logger.warn({ reason, sessions, hint }, `${text}; backups, drills and metrics go on meanwhile`);
  }

  #classify(err: unknown): Failure {
    const message = errorMessage(err);
    if (err instanceof MigrationError) {
      if (err.reason === 'permission_denied') return permissionDenied(message);
      const hint = err.hint;
      if (err.reason === 'not_empty') return { kind: 'skipped', reason: err.reason, message, hint };
      return (BLOCKED_REASONS as readonly string[]).includes(err.reason)
        ? { kind: 'blocked', reason: err.reason as BlockedReason, sessions: err.sessions, message, hint }
        : { kind: 'failed', reason: err.reason as FailedReason, message, hint };
    }
    if (err instanceof OperatorError)
      return {
        kind: 'failed',
        reason: err.exitCode === EXIT.CONFIG ? 'files' : 'statement',
        message,
        hint: err.hint,
      };
    const { kind, retryable } = classify(err);
    if (kind === 'permission_denied') return permissionDenied(message);
    if (kind === 'read_only')
      return {
        kind: 'blocked',
        reason: 'read_only',
        sessions: [],
        message: `the database is read-only for now: ${message}`,
        hint: 'migrations wait for a writable primary (a standby is promoted, a failover ends)',
      };
    const blockers = (err as { blockers?: SessionInfo[] }).blockers ?? [];
    if (kind === 'lock_timeout' || kind === 'deadlock')
      return {
        kind: 'blocked',
        reason: 'lock_wait',
        sessions: blockers,
        message: `a migration gave up waiting for a lock: ${message}${blockers.length ? `, behind ${sessionsText(blockers)}` : ''}`,
        hint: 'end that session or its transaction, or wait for it to finish',
      };
    const target = describeTarget(parseDatabaseUrl(this.o.db.url));
    const unavailable = unavailableError(err, target);
    if (unavailable && !retryable && !this.#contacted) return { kind: 'fatal', error: unavailable };
    if (unavailable || retryable) {
      const explained = explainConnectionError(err, target);
      return {
        kind: 'blocked',
        reason: 'unreachable',
        sessions: [],
        message: explained.message,
        hint: explained.hint,
      };
    }
    return { kind: 'failed', reason: 'statement', message };
  }

  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.#signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.#signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#signal.addEventListener('abort', done, { once: true });
    });
  }
}

/** The daemon's role lacks a privilege the migrations need: said once, with both ways out. */
function permissionDenied(message: string): Failure {
  return {
    kind: 'failed',
    reason: 'permission_denied',
    message: `the role of DATABASE_URL may not apply the schema migrations (MIGRATE_ON_START): ${message}`,
    hint: 'apply them as the schema owner (`pg-maintd migrate up` with its URL) and set MIGRATE_ON_START=false for a monitoring-only role, or grant this role CREATE on the schema',
  };
}
