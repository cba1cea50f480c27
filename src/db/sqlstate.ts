/**
 * Classification of database errors by SQLSTATE (and Node socket error codes), so callers decide
 * on retry or report without matching message strings. The retry policy lives here.
 */
import { errorMessage } from '../core/errors.js';

export type ErrorKind =
  | 'connection_lost'
  | 'connection_refused'
  | 'host_unknown'
  | 'timeout'
  | 'auth_failed'
  | 'password_missing'
  | 'database_missing'
  | 'permission_denied'
  | 'serialization_failure'
  | 'deadlock'
  | 'lock_timeout'
  | 'query_canceled'
  | 'server_starting'
  | 'too_many_connections'
  | 'insufficient_resources'
  | 'read_only'
  | 'undefined_object'
  | 'syntax_error'
  | 'integrity_violation'
  | 'tls'
  | 'pooler_refused'
  | 'unknown';

export interface Classified {
  kind: ErrorKind;
  /** Worth trying again later, unchanged. */
  retryable: boolean;
  /** SQLSTATE or Node error code, when there is one. */
  code: string | undefined;
}

const BY_SQLSTATE: Record<string, ErrorKind> = {
  '28P01': 'auth_failed', // invalid_password
  '28000': 'auth_failed', // invalid_authorization_specification (pg_hba reject)
  '3D000': 'database_missing', // invalid_catalog_name
  '42501': 'permission_denied', // insufficient_privilege
  '40001': 'serialization_failure',
  '40P01': 'deadlock',
  '55P03': 'lock_timeout', // lock_not_available
  '57014': 'query_canceled', // statement_timeout or pg_cancel_backend
  '57P01': 'connection_lost', // admin_shutdown
  '57P02': 'connection_lost', // crash_shutdown
  '57P03': 'server_starting', // cannot_connect_now
  '53300': 'too_many_connections',
  '25006': 'read_only', // read_only_sql_transaction (a standby, or after failover)
  '42P01': 'undefined_object', // undefined_table
  '42883': 'undefined_object', // undefined_function
  '42704': 'undefined_object',
  '58P01': 'undefined_object', // undefined_file (extension library not installed)
  '42601': 'syntax_error',
};

const BY_CLASS: Record<string, ErrorKind> = {
  '08': 'connection_lost', // connection_exception
  '53': 'insufficient_resources',
  '23': 'integrity_violation',
  '42': 'syntax_error', // syntax_error_or_access_rule_violation (remaining)
};

const BY_NODE_CODE: Record<string, ErrorKind> = {
  ECONNREFUSED: 'connection_refused',
  ENOENT: 'connection_refused', // a Unix socket path (?host=/dir) where no server listens
  ECONNRESET: 'connection_lost',
  EPIPE: 'connection_lost',
  ECONNABORTED: 'connection_lost',
  EHOSTUNREACH: 'connection_lost',
  ENETUNREACH: 'connection_lost',
  ETIMEDOUT: 'timeout',
  ENOTFOUND: 'host_unknown',
  EAI_AGAIN: 'host_unknown',
  PGMAINTD_NO_PASSWORD: 'password_missing', // db/password.ts
  DEPTH_ZERO_SELF_SIGNED_CERT: 'tls',
  SELF_SIGNED_CERT_IN_CHAIN: 'tls',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'tls',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'tls',
  CERT_HAS_EXPIRED: 'tls',
  ERR_TLS_CERT_ALTNAME_INVALID: 'tls',
};

const RETRYABLE = new Set<ErrorKind>([
  'connection_lost',
  'connection_refused',
  'timeout',
  'serialization_failure',
  'deadlock',
  'lock_timeout',
  'server_starting',
  'too_many_connections',
  'insufficient_resources',
  'host_unknown', // DNS can come back; a failover may be changing the record
]);

// pg raises these without a code.
const MESSAGE_KINDS: Array<[RegExp, ErrorKind]> = [
  [
    /Connection terminated|connection ended unexpectedly|Client has encountered a connection error/i,
    'connection_lost',
  ],
  [
    /timeout exceeded when trying to connect|Connection terminated due to connection timeout|timeout expired/i,
    'timeout',
  ],
  [/server does not support SSL/i, 'tls'],
  // pg's words when the server asks for a password and none was given (MissingPasswordError's code
  // covers the pools' own connections)
  [/client password must be a (non-empty )?string|Password must be a string/i, 'password_missing'],
];

export function classify(err: unknown): Classified {
  const code = errorCode(err);
  let kind: ErrorKind | undefined;
  // PgBouncer's refusal of the session settings every pool gives at connection (08P01): no retry helps
  if (err instanceof Error && /unsupported startup parameter/i.test(err.message))
    return { kind: 'pooler_refused', retryable: false, code };
  // cannot_connect_now is also what a server that is shutting down answers: it is going away, not
  // coming up (a readiness probe that says "starting" then would mislead whoever reads it)
  if (code === '57P03' && err instanceof Error && /shutting down/i.test(err.message))
    return { kind: 'connection_lost', retryable: RETRYABLE.has('connection_lost'), code };
  if (code) {
    kind = BY_SQLSTATE[code] ?? BY_NODE_CODE[code];
    if (!kind && /^[0-9A-Z]{5}$/.test(code)) kind = BY_CLASS[code.slice(0, 2)];
  }
  if (!kind) {
    const message = errorMessage(err);
    kind = MESSAGE_KINDS.find(([re]) => re.test(message))?.[1];
  }
  kind ??= 'unknown';
  return { kind, retryable: RETRYABLE.has(kind), code };
}

function errorCode(err: unknown): string | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; errors?: unknown[] };
  if (typeof e.code === 'string') return e.code;
  // AggregateError from dual-stack connects (::1 and 127.0.0.1 both refused)
  if (Array.isArray(e.errors) && e.errors.length > 0) return errorCode(e.errors[0]);
  return undefined;
}

/**
 * An operator-facing sentence for a connection failure: what is wrong and what to do. `setting` names
 * where the connection came from (DATABASE_URL, VERIFY_DATABASE_URL, --target-url).
 */
export function explainConnectionError(
  err: unknown,
  target: string,
  setting = 'DATABASE_URL',
): { message: string; hint: string } {
  const { kind, code } = classify(err);
  let detail = err instanceof Error && err.message ? err.message : String(err);
  const from = (err as { passwordSource?: unknown } | undefined)?.passwordSource;
  if (kind === 'password_missing') detail = 'the server asks for a password and none was given';
  else if (code === '28P01' && typeof from === 'string') detail += ` (the password came from ${from})`;
  const hints: Partial<Record<ErrorKind, string>> = {
    connection_refused: `is PostgreSQL running and listening there? Check the host and port in ${setting}`,
    host_unknown: `the host name does not resolve; check the host in ${setting} and DNS`,
    timeout: 'the server did not answer in time; check network reachability, firewalls, and the port',
    auth_failed:
      code === '28P01'
        ? `the server refused the password: check the user in ${setting} and the password where it came from (the URL, PGPASSWORD, or the passfile ~/.pgpass or PGPASSFILE); an unknown user is refused the same way`
        : /no encryption/i.test(detail)
          ? `the server's pg_hba.conf lets this client in only over TLS: set DB_SSL_MODE=verify-full (with DB_SSL_ROOT_CERT) or require`
          : `check the user and password (${setting}, PGPASSWORD or passfile) and that pg_hba.conf allows this client`,
    password_missing: passwordHint(err, setting),
    database_missing: `create the database, or fix its name in ${setting}`,
    permission_denied: 'grant the role what it needs (see the README: least-privilege role)',
    tls: /server does not support SSL/i.test(detail)
      ? `the server has no TLS (ssl = off): set DB_SSL_MODE=disable (or sslmode=disable in ${setting}) to connect without it, which is safe only on a trusted network or a Unix socket; or turn on ssl at the server and keep verify-full`
      : 'check DB_SSL_MODE and DB_SSL_ROOT_CERT against the server (ssl=on, its certificate and host name)',
    too_many_connections: 'the server is at max_connections; lower DB_POOL_MAX or raise max_connections',
    pooler_refused: `${setting} goes through a connection pooler (PgBouncer) that refuses the session settings pg-maintd gives every connection; pg-maintd needs a session of its own (advisory locks, session settings, pg_dump's snapshot): connect it straight to PostgreSQL (usually port 5432), not through the pooler`,
    server_starting: 'the server is starting up or recovering; it should accept connections shortly',
    connection_lost: 'the connection dropped; check that the server is up',
  };
  return {
    message: `cannot use the database at ${target}: ${detail}`,
    hint: hints[kind] ?? `check ${setting} and that the server is reachable`,
  };
}

/** Where a password can go; a passfile that exists but was not used says why. */
function passwordHint(err: unknown, setting: string): string {
  const problem = (err as { passfileProblem?: unknown } | undefined)?.passfileProblem;
  const urlFile = setting === 'DATABASE_URL' ? ', or in the URL in the file DATABASE_URL_FILE names' : '';
  return (
    `give the password in PGPASSWORD, or in a passfile (a line host:port:database:user:password in ~/.pgpass, mode 0600, or in the file PGPASSFILE names)${urlFile}` +
    (typeof problem === 'string' ? `; ${problem}` : '')
  );
}
