/**
 * The password of a connection, found where libpq finds it and in its order: the URL, PGPASSWORD,
 * then the passfile (PGPASSFILE, or ~/.pgpass). pg_dump, pg_restore and psql, run as children with
 * PGPASSWORD, PGPASSFILE and HOME passed on, find the same one. Looked up only when the server asks
 * for a password, so trust and peer authentication need none.
 */
import { readFileSync, statSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import type { ConnectionTarget } from '../core/database-url.js';

export interface FoundPassword {
  password: string;
  /** Where it came from, for a message when the server refuses it (never the password itself). */
  source: string;
}

/** The passfile libpq reads: PGPASSFILE, or .pgpass in the home folder. */
export function passfilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PGPASSFILE || join(env.HOME || homedir(), '.pgpass');
}

/**
 * The server asked for a password and none was given. Its message says so in plain words (pg's own
 * is "SASL: SCRAM-SERVER-FIRST-MESSAGE: client password must be a string").
 */
export class MissingPasswordError extends Error {
  readonly code = 'PGMAINTD_NO_PASSWORD';
  /** A passfile that exists but was not used, and why (libpq ignores one others can read). */
  readonly passfileProblem: string | undefined;
  constructor(passfileProblem?: string) {
    super('the server asks for a password and none was given');
    this.name = 'MissingPasswordError';
    this.passfileProblem = passfileProblem;
  }
}

export function findPassword(
  target: ConnectionTarget,
  env: NodeJS.ProcessEnv = process.env,
): FoundPassword | { problem?: string } {
  if (target.password) return { password: target.password, source: 'the connection URL' };
  if (env.PGPASSWORD) return { password: env.PGPASSWORD, source: 'PGPASSWORD' };
  const file = passfilePath(env);
  let stat;
  try {
    stat = statSync(file);
  } catch {
    return {};
  }
  if (!stat.isFile()) return { problem: `the passfile ${file} is not a plain file` };
  // libpq ignores a passfile the group or others may read: pg_dump would not find the password either
  if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0)
    return {
      problem: `the passfile ${file} is ignored because group or others may read it: chmod 600 ${file}`,
    };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { problem: `the passfile ${file} cannot be read (${(err as NodeJS.ErrnoException).code})` };
  }
  const password = matchPassfile(text, target, env);
  if (password !== undefined) return { password, source: `the passfile ${file}` };
  return {
    problem: `the passfile ${file} has no line for ${passfileKey(target, env)}`,
  };
}

/**
 * The user a connection whose URL names none logs in as: PGUSER, else the operating system's name of
 * the process's user, as libpq decides (and as pg_dump, run as a child, does). The pool passes it to
 * pg explicitly, so the passfile line looked up is the one for the user that connects.
 */
export function defaultUser(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PGUSER) return env.PGUSER;
  try {
    return userInfo().username;
  } catch {
    // no passwd entry for this uid (some containers): what the environment says
    return env.USER ?? env.USERNAME ?? '';
  }
}

/**
 * The first line of a passfile that matches the target: host:port:database:user:password, where a
 * field that is exactly `*` matches anything. As in libpq, each field ends at the first unescaped
 * colon, a backslash makes the next character literal (so `\*` is an asterisk, not a wildcard), and
 * the password ends at its first unescaped colon too (the rest of the line is ignored).
 */
export function matchPassfile(
  text: string,
  target: ConnectionTarget,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const wanted = [
    hostForPassfile(target.host),
    String(target.port),
    target.database,
    target.user ?? defaultUser(env),
  ];
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith('#')) continue;
    const fields = splitPassfileLine(line);
    if (fields.length < 5) continue;
    const matches = wanted.every((w, i) => fields[i]!.wildcard || fields[i]!.value === w);
    if (matches) return fields[4]!.value;
  }
  return undefined;
}

/** host:port:database:user, as the line the passfile needs would start. */
export function passfileKey(target: ConnectionTarget, env: NodeJS.ProcessEnv = process.env): string {
  return [hostForPassfile(target.host), target.port, target.database, target.user ?? defaultUser(env)].join(
    ':',
  );
}

/**
 * libpq matches a connection over its default socket folder (DEFAULT_PGSOCKET_DIR) as "localhost",
 * comparing the path as written. That folder is /var/run/postgresql in the Debian build pg-maintd
 * runs (its image, and Debian's packages), while upstream's /tmp is not mapped there: a /tmp socket
 * matched as localhost here would give the daemon a password its own pg_dump does not find.
 */
function hostForPassfile(host: string): string {
  return host === '/var/run/postgresql' ? 'localhost' : host;
}

interface PassfileField {
  value: string;
  /** A bare `*`: matches any value (an escaped `\*` is a literal asterisk). */
  wildcard: boolean;
}

/** The fields of a line: each ends at an unescaped colon; a backslash makes the next character literal. */
function splitPassfileLine(line: string): PassfileField[] {
  const fields: PassfileField[] = [];
  let cur = '';
  let escaped = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      escaped = true;
    } else if (c === ':') {
      fields.push({ value: cur, wildcard: cur === '*' && !escaped });
      if (fields.length === 5) return fields; // libpq ignores what follows the password
      cur = '';
      escaped = false;
    } else cur += c;
  }
  fields.push({ value: cur, wildcard: cur === '*' && !escaped });
  return fields;
}
