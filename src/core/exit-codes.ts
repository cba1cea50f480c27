/**
 * Process exit codes. The sysexits.h values are what init systems and operators already know.
 * Documented in the README ("Exit codes"); keep the two in step.
 */
export const EXIT = {
  OK: 0,
  /** A one-shot command ran and reported failure (for example a failed backup). */
  FAILURE: 1,
  /** `backup`: every backup succeeded and is good, but retention after it failed (nothing more was deleted). */
  RETENTION_FAILED: 3,
  /** EX_USAGE: unknown flag or subcommand. */
  USAGE: 64,
  /** EX_DATAERR: the database's state refuses the work (a changed applied migration, a failed one). */
  DATAERR: 65,
  /** EX_UNAVAILABLE: a service the command needs (database, bucket) cannot be reached. */
  UNAVAILABLE: 69,
  /** EX_SOFTWARE: an internal error (unhandled rejection, uncaught exception). */
  SOFTWARE: 70,
  /** EX_TEMPFAIL: another pg-maintd holds the lease for this work (a scheduled run); try again later. */
  TEMPFAIL: 75,
  /** EX_CONFIG: configuration is invalid. */
  CONFIG: 78,
  /** The drain did not finish within the shutdown grace period; the exit was forced. */
  GRACE_EXPIRED: 124,
  /** A second SIGINT / SIGTERM forced the exit: 128 + the signal number, as shells report it. */
  FORCED_SIGINT: 130,
  FORCED_SIGTERM: 143,
  /**
   * `wal-fetch` (restore_command): a WAL file is corrupt, the chain has a gap, or the store cannot be
   * read. PostgreSQL takes any exit of 1 to 125 for "not in the archive" and ends recovery there (a
   * silently shorter restore); above 125 (but not 143, its own SIGTERM) it aborts recovery instead.
   */
  RECOVERY_ABORT: 255,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
