/**
 * Why a migration run stopped, for the start-up bootstrap to decide between waiting and retrying
 * (the database, a lock, another session's transaction), reporting a fault that retrying cannot
 * fix (a changed file, a failing statement, tables without history, a missing privilege), and
 * leaving alone a database that is not its to build in (other objects, no migration history).
 */
import type { SessionInfo } from '../db/sessions.js';
import { OperatorError } from '../core/errors.js';
import type { ExitCode } from '../core/exit-codes.js';

/**
 * Transient: another session holds the migration lock, a statement waited behind another session,
 * the database cannot be reached, it is read-only for now (a failover under way), or the server is a
 * standby (nothing is attempted until it is promoted: an expected state, not an alert).
 */
export const BLOCKED_REASONS = ['lock_held', 'lock_wait', 'unreachable', 'read_only', 'standby'] as const;
export type BlockedReason = (typeof BLOCKED_REASONS)[number];

/** Permanent until someone acts: retrying unchanged would fail the same way. */
export const FAILED_REASONS = [
  'changed_file',
  'no_history',
  'statement',
  'permission_denied',
  'files',
  'history_untrusted',
  'schema_untrusted',
] as const;
export type FailedReason = (typeof FAILED_REASONS)[number];

/**
 * Not attempted by design: the database holds objects of its own and no migration history, so
 * the start-up migrations leave it alone until an operator adopts it (`migrate up` or `migrate
 * baseline`). Not a fault: pg-maintd may well be there only to back up and monitor.
 */
export const SKIPPED_REASONS = ['not_empty'] as const;
export type SkippedReason = (typeof SKIPPED_REASONS)[number];

export class MigrationError extends OperatorError {
  constructor(
    readonly reason: BlockedReason | FailedReason | SkippedReason,
    message: string,
    opts: { hint: string; exitCode: ExitCode; cause?: unknown; sessions?: SessionInfo[] },
  ) {
    super(message, opts);
    this.name = 'MigrationError';
    this.sessions = opts.sessions ?? [];
  }

  /** The sessions that held the lock or blocked the statement, when that was the cause. */
  readonly sessions: SessionInfo[];
}
