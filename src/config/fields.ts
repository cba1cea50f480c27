/**
 * The one configuration schema. Every setting is declared here once: its environment name (which is
 * also its key in a config file), its kind, its default, what it means and what is allowed.
 * The README's configuration table is generated from this list (`npm run docs:config`) and a test
 * keeps the two identical.
 */
import type { z } from 'zod';
import { bool, duration, int, oneOf, optionalText, text, url } from './kinds.js';

export interface FieldSpec {
  schema: z.ZodType;
  /** Default as it would be written in a config file; undefined means required or optional-unset. */
  default?: string | number | boolean;
  required?: boolean;
  /** What the setting means (README, check-config). */
  doc: string;
  /** What is allowed (error messages). */
  allowed: string;
  /** true: masked whole; 'url': only the password inside the URL is masked. */
  secret?: boolean | 'url';
  group: 'Database' | 'HTTP' | 'Logging' | 'Lifecycle';
}

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const ms = (lo: number, hi: number, what: string) =>
  `a duration from ${lo} ms to ${what} ("500ms", "30s", "5m", or bare milliseconds)`;

export const FIELDS = {
  DATABASE_URL: {
    schema: url(['postgres:', 'postgresql:']),
    required: true,
    doc: 'Connection URL of the database pg-maintd looks after. Prefer PGPASSWORD or a passfile to a password in the URL.',
    allowed: 'a postgres:// or postgresql:// URL, e.g. postgresql://pgmaintd@db.internal:5432/app',
    secret: 'url',
    group: 'Database',
  },
  DB_POOL_MIN: {
    schema: int(0, 1000),
    default: 2,
    doc: 'Connections the pool keeps open when idle.',
    allowed: 'an integer from 0 to 1000, not above DB_POOL_MAX',
    group: 'Database',
  },
  DB_POOL_MAX: {
    schema: int(1, 1000),
    default: 20,
    doc: 'Most connections the pool opens.',
    allowed: 'an integer from 1 to 1000',
    group: 'Database',
  },
  DB_POOL_IDLE_TIMEOUT: {
    schema: duration(0, 86_400_000),
    default: 30000,
    doc: 'Idle time after which a pooled connection above DB_POOL_MIN is closed (ms).',
    allowed: ms(0, 86_400_000, '1 day'),
    group: 'Database',
  },
  DB_POOL_ACQUIRE_TIMEOUT: {
    schema: duration(1, 3_600_000),
    default: 60000,
    doc: 'Longest wait for a pooled connection, including connecting (ms).',
    allowed: ms(1, 3_600_000, '1 hour'),
    group: 'Database',
  },
  DB_SSL_MODE: {
    schema: oneOf(SSL_MODES),
    default: 'verify-full',
    doc: 'TLS to the database, with libpq meanings. disable/allow/prefer/require do not verify the server and log a warning when TLS could be in use; verify-ca checks the chain, verify-full also the host name. A `sslmode` in DATABASE_URL is used when this is not set.',
    allowed: SSL_MODES.join(' | '),
    group: 'Database',
  },
  DB_SSL_REJECT_UNAUTHORIZED: {
    schema: bool(),
    default: true,
    doc: 'Set false to skip certificate verification in verify-ca/verify-full (logged as a warning). Never needed with a correct DB_SSL_ROOT_CERT.',
    allowed: 'true or false',
    group: 'Database',
  },
  DB_SSL_ROOT_CERT: {
    schema: optionalText(),
    doc: 'PEM file of the CA(s) that signed the server certificate (libpq sslrootcert). Unset: the system CA store.',
    allowed: 'a path to a readable PEM file',
    group: 'Database',
  },
  DB_SSL_CERT: {
    schema: optionalText(),
    doc: 'Client certificate PEM file (libpq sslcert), for certificate authentication.',
    allowed: 'a path to a readable PEM file, set together with DB_SSL_KEY',
    group: 'Database',
  },
  DB_SSL_KEY: {
    schema: optionalText(),
    doc: 'Client private key PEM file (libpq sslkey).',
    allowed: 'a path to a readable PEM file, set together with DB_SSL_CERT',
    group: 'Database',
  },
  HTTP_HOST: {
    schema: text(),
    default: '0.0.0.0',
    doc: 'Address the HTTP server (/metrics, /healthz, /readyz) listens on.',
    allowed: 'an IP address or host name, e.g. 0.0.0.0, 127.0.0.1, ::',
    group: 'HTTP',
  },
  HTTP_PORT: {
    schema: int(0, 65535),
    default: 9188,
    doc: 'Port of the HTTP server. 0 picks a free port (logged at start).',
    allowed: 'an integer from 0 to 65535',
    group: 'HTTP',
  },
  READYZ_INTERVAL: {
    schema: duration(100, 60_000),
    default: '2s',
    doc: 'How often the readiness check runs `SELECT 1`; /readyz answers from its last result.',
    allowed: ms(100, 60_000, '1 minute'),
    group: 'HTTP',
  },
  READYZ_TIMEOUT: {
    schema: duration(50, 60_000),
    default: '1s',
    doc: 'Time limit of the readiness `SELECT 1`, connecting included.',
    allowed: ms(50, 60_000, '1 minute'),
    group: 'HTTP',
  },
  LIVENESS_MAX_LAG: {
    schema: duration(50, 600_000),
    default: '5s',
    doc: 'Event-loop or scheduler stall beyond which /healthz answers 503.',
    allowed: ms(50, 600_000, '10 minutes'),
    group: 'HTTP',
  },
  LOG_LEVEL: {
    schema: oneOf(LOG_LEVELS),
    default: 'info',
    doc: 'Least severe level logged.',
    allowed: LOG_LEVELS.join(' | '),
    group: 'Logging',
  },
  LOG_FORMAT: {
    schema: oneOf(['auto', 'json', 'pretty'] as const),
    default: 'auto',
    doc: 'auto: pretty when stdout is a terminal, JSON otherwise.',
    allowed: 'auto | json | pretty',
    group: 'Logging',
  },
  SHUTDOWN_GRACE_PERIOD: {
    schema: duration(0, 3_600_000),
    default: '25s',
    doc: 'How long the first SIGTERM/SIGINT may drain before the exit is forced (exit 124). Keep it below the orchestrator’s own grace (Kubernetes: 30 s).',
    allowed: ms(0, 3_600_000, '1 hour'),
    group: 'Lifecycle',
  },
} as const satisfies Record<string, FieldSpec>;

export type FieldName = keyof typeof FIELDS;
export const FIELD_NAMES = Object.keys(FIELDS) as FieldName[];

/** `DB_POOL_MAX` -> `--db-pool-max` */
export function flagFor(name: string): string {
  return `--${name.toLowerCase().replace(/_/g, '-')}`;
}
