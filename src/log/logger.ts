/**
 * pino logger: JSON in production, pretty on a terminal. Secrets are removed by configuration:
 * `redact` for fields known to hold them, and a final scrub of every written line for URL
 * passwords and for the literal secret values the configuration holds.
 */
import { pino, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';
import { MASK, maskUrlPasswords } from '../core/mask.js';

export type { Logger } from 'pino';

const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'PGPASSWORD',
  '*.PGPASSWORD',
  '*.*.PGPASSWORD',
  'secretAccessKey',
  '*.secretAccessKey',
  '*.*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  '*.*.sessionToken',
  'AWS_SECRET_ACCESS_KEY',
  '*.AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  '*.AWS_SESSION_TOKEN',
  'authorization',
  'headers.authorization',
  '*.headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'bearerToken',
  '*.bearerToken',
];

export interface LoggerSettings {
  level: string;
  format: 'auto' | 'json' | 'pretty';
  /** Literal secret values (passwords) to scrub wherever they appear. */
  secrets?: readonly string[];
  /** Where lines go; defaults to stdout. Tests pass a stream to capture them. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(s: LoggerSettings): Logger {
  // registered for every scrubber, the CLI's last error line (written without a logger) included
  for (const secret of s.secrets ?? []) registerSecret(secret);
  const scrub = makeScrubber(s.secrets ?? []);
  const options: LoggerOptions = {
    level: s.level,
    base: { service: 'pg-maintd', pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: MASK },
    serializers: { err: pino.stdSerializers.err },
    timestamp: pino.stdTimeFunctions.isoTime,
    hooks: { streamWrite: scrub },
  };
  // auto: pretty for a person at a terminal, whichever stream the lines go to (stdout, or stderr
  // when stdout carries a report); JSON otherwise
  const terminal = ((s.destination ?? process.stdout) as Partial<NodeJS.WriteStream>).isTTY === true;
  const usePretty = s.format === 'pretty' || (s.format === 'auto' && terminal);
  if (usePretty) {
    return pino(
      options,
      pretty({ colorize: true, sync: true, destination: s.destination ?? 1, messageFormat: humanMessage }),
    );
  }
  return pino(options, s.destination ?? pino.destination({ dest: 1, sync: true }));
}

/**
 * The message as a person reads it on a terminal: a progress event says how far it is and the time
 * left in its line, "about" where its total is an estimate (a dump against the database's size).
 */
export function humanMessage(log: Record<string, unknown>, messageKey: string): string {
  const msg = String(log[messageKey] ?? '');
  if (typeof log.percent !== 'number') return msg;
  const eta = typeof log.etaSeconds === 'number' ? `, about ${humanSeconds(log.etaSeconds)} left` : '';
  return `${msg}: ${log.estimate === true ? 'about ' : ''}${log.percent}%${eta}`;
}

function humanSeconds(s: number): string {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/**
 * Secret values learned after start-up (a password DATABASE_URL_FILE rotated to): every scrubber,
 * and the CLI's last error line, scrub them too.
 */
const learned = new Set<string>();
let learnedVersion = 0;

export function registerSecret(secret: string | undefined): void {
  if (!secret || secret.length < 4 || learned.has(secret)) return;
  learned.add(secret);
  learnedVersion++;
}

function needlesOf(secrets: Iterable<string>): string[] {
  const needles = new Set<string>();
  for (const secret of secrets) {
    if (secret.length < 4) continue; // too short to scrub without mangling ordinary text
    needles.add(secret);
    needles.add(JSON.stringify(secret).slice(1, -1)); // as it appears inside a JSON string
    needles.add(encodeURIComponent(secret));
  }
  return [...needles].sort((a, b) => b.length - a.length);
}

/** A function that removes URL passwords and the given (and learned) secret values from a line. */
export function makeScrubber(secrets: readonly string[]): (line: string) => string {
  let version = -1;
  let list: string[] = [];
  return (line: string) => {
    if (version !== learnedVersion) {
      list = needlesOf([...secrets, ...learned]);
      version = learnedVersion;
    }
    let out = maskUrlPasswords(line);
    for (const n of list) if (out.includes(n)) out = out.split(n).join(MASK);
    return out;
  };
}
