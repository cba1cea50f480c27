/**
 * The password of a connection, found where libpq finds it and in its order: the URL, PGPASSWORD,
 * then the passfile (PGPASSFILE, or ~/.pgpass). pg_dump, pg_restore and psql, run as children with
 * PGPASSWORD, PGPASSFILE and HOME passed on, find the same one. Looked up only when the server asks
 * for a password, so trust and peer authentication need none.
 */
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
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
  const password = matchPassfile(text, target);
  if (password !== undefined) return { password, source: `the passfile ${file}` };
  return {
    problem: `the passfile ${file} has no line for ${passfileKey(target)}`,
  };
}

/** The first line of a passfile that matches the target: host:port:database:user:password, * any. */
export function matchPassfile(text: string, target: ConnectionTarget): string | undefined {
  const wanted = [hostForPassfile(target.host), String(target.port), target.database, target.user ?? ''];
  for (const line of text.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue;
    const fields = splitPassfileLine(line);
    if (fields.length < 5) continue;
    const matches = wanted.every((w, i) => fields[i] === '*' || fields[i] === w);
    if (matches) return fields.slice(4).join(':');
  }
  return undefined;
}

/** host:port:database:user, as the line the passfile needs would start. */
export function passfileKey(target: ConnectionTarget): string {
  return [hostForPassfile(target.host), target.port, target.database, target.user ?? '*'].join(':');
}

/** libpq matches a connection over the default socket folder as "localhost". */
function hostForPassfile(host: string): string {
  return ['/var/run/postgresql', '/run/postgresql', '/tmp'].includes(host) ? 'localhost' : host;
}

/** Splits on unescaped colons; \: and \\ stand for : and \. */
function splitPassfileLine(line: string): string[] {
  const fields: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) cur += line[++i];
    else if (c === ':' && fields.length < 4) {
      fields.push(cur);
      cur = '';
    } else cur += c;
  }
  fields.push(cur);
  return fields;
}
