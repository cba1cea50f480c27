/**
 * pino logger: JSON in production, pretty on a terminal. Secrets are removed by configuration:
 * `redact` for fields known to hold them, and a final scrub of every written line for URL
 * passwords and for the literal secret values the configuration holds.
 */
import { pino, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';
import { MASK, maskUrlPasswords } from '../config/mask.js';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
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
  const scrub = makeScrubber(s.secrets ?? []);
  const options: LoggerOptions = {
    level: s.level,
    base: { service: 'pg-maintd', pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: MASK },
    serializers: { err: pino.stdSerializers.err },
    timestamp: pino.stdTimeFunctions.isoTime,
    hooks: { streamWrite: scrub },
  };
  const usePretty =
    s.format === 'pretty' || (s.format === 'auto' && !s.destination && process.stdout.isTTY === true);
  if (usePretty) {
    return pino(options, pretty({ colorize: true, sync: true, destination: s.destination ?? 1 }));
  }
  return pino(options, s.destination ?? pino.destination({ dest: 1, sync: true }));
}

/** A function that removes URL passwords and the given secret values from a written line. */
export function makeScrubber(secrets: readonly string[]): (line: string) => string {
  const needles = new Set<string>();
  for (const secret of secrets) {
    if (secret.length < 4) continue; // too short to scrub without mangling ordinary text
    needles.add(secret);
    needles.add(JSON.stringify(secret).slice(1, -1)); // as it appears inside a JSON string
    needles.add(encodeURIComponent(secret));
  }
  const list = [...needles].sort((a, b) => b.length - a.length);
  return (line: string) => {
    let out = maskUrlPasswords(line);
    for (const n of list) if (out.includes(n)) out = out.split(n).join(MASK);
    return out;
  };
}
