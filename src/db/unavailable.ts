/**
 * A database that cannot be reached, as a one-shot command reports it (exit 69), from the SQLSTATE
 * classification.
 */
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { classify, explainConnectionError, type ErrorKind } from './sqlstate.js';

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
  const { message, hint } = explainConnectionError(err, target);
  return new OperatorError(message, {
    hint: hint.replaceAll('DATABASE_URL', setting),
    exitCode: EXIT.UNAVAILABLE,
    cause: err,
  });
}
