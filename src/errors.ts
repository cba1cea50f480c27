import { classify, explainConnectionError, type ErrorKind } from './db/sqlstate.js';
import { EXIT, type ExitCode } from './exit-codes.js';

/**
 * An error an operator can fix: it carries what went wrong, what to do, and the exit code.
 * The CLI prints these as one message without a stack trace.
 */
export class OperatorError extends Error {
  readonly hint: string | undefined;
  readonly exitCode: ExitCode;

  constructor(message: string, opts: { hint?: string; exitCode?: ExitCode; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OperatorError';
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? EXIT.FAILURE;
  }

  /** The text shown to the operator: the message, then the fix on its own line. */
  describe(): string {
    return this.hint ? `${this.message}\n  fix: ${this.hint}` : this.message;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Why a file could not be read or parsed, for a message: no such file, permission denied, another
 * errno code, or a parser's first line (never the rest, which may quote the file: a key, a hash).
 */
export function fileReadProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied';
  return code ?? errorMessage(err).split('\n')[0]!;
}

/** Kinds of database error that mean it cannot be reached, or refuses the session. */
const UNAVAILABLE = new Set<ErrorKind>([
  'connection_lost',
  'connection_refused',
  'host_unknown',
  'timeout',
  'auth_failed',
  'password_missing',
  'database_missing',
  'too_many_connections',
  'server_starting',
  'tls',
  'pooler_refused',
]);

/**
 * A database that cannot be reached, as a one-shot command reports it: what is wrong at `target`,
 * what to check (in `setting`, the setting or flag that names that database), and exit 69.
 * Undefined for any other error.
 */
export function unavailableError(
  err: unknown,
  target: string,
  setting = 'DATABASE_URL',
): OperatorError | undefined {
  if (!UNAVAILABLE.has(classify(err).kind)) return undefined;
  const { message, hint } = explainConnectionError(err, target, setting);
  return new OperatorError(message, {
    hint,
    exitCode: EXIT.UNAVAILABLE,
    cause: err,
  });
}

/**
 * A one-shot command stopped by SIGINT/SIGTERM after rolling its work back: exit 130 or 143, as a
 * shell reports a process the signal ended, so a script never takes it for success or for a fault
 * of the data.
 */
export function interruptedError(what: string, signal: NodeJS.Signals, cause?: unknown): OperatorError {
  return new OperatorError(`${what} interrupted by ${signal}: ${INTERRUPTED_OUTCOME}`, {
    hint: 'run the command again; it starts from a clean state',
    exitCode: signal === 'SIGINT' ? EXIT.FORCED_SIGINT : EXIT.FORCED_SIGTERM,
    cause,
  });
}
const INTERRUPTED_OUTCOME = 'the work in flight was rolled back and nothing was recorded';
