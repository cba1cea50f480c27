/**
 * The PostgreSQL client programs (pg_dump, pg_restore, psql): where they are, their version, and the
 * environment that connects them. The password travels in the child's environment (readable only
 * by the same user), never in argv, which every local user can read.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { defaultUser } from '../db/password.js';
import { effectiveSslMode, type TlsSettings } from '../db/tls.js';
import type { ConnectionTarget } from '../core/database-url.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

/** The client major the Docker image ships: the newest PostgreSQL release, which backs up every
 * older server (pg_dump refuses only newer ones). The Dockerfile's PG_CLIENT_MAJOR is checked
 * against it. */
export const IMAGE_CLIENT_MAJOR = 18;

const run = promisify(execFile);

export type ClientTool =
  'pg_dump' | 'pg_dumpall' | 'pg_restore' | 'psql' | 'pg_basebackup' | 'pg_verifybackup';

export function toolPath(tool: ClientTool, binDir: string | undefined): string {
  return binDir ? join(binDir, tool) : tool;
}

/**
 * The client program of Debian's folder for `major`, else of the nearest newer major there: client
 * tools read older servers' formats, not newer ones (an embedded server of another major ships no
 * client tools, so the machine's newer client is what is left).
 */
export function debianToolAtLeast(tool: ClientTool, major: number): string | undefined {
  const root = '/usr/lib/postgresql';
  let majors: number[] = [];
  try {
    majors = readdirSync(root)
      .map(Number)
      .filter((m) => Number.isInteger(m) && m >= major)
      .sort((a, b) => a - b);
  } catch {
    return undefined; // not Debian's layout
  }
  for (const m of majors) {
    const path = join(root, String(m), 'bin', tool);
    if (existsSync(path)) return path;
  }
  return undefined;
}

/** The major version of a client program, e.g. 15 for "pg_dump (PostgreSQL) 15.18 (Debian ...)". */
export async function toolMajor(
  tool: ClientTool,
  binDir: string | undefined,
): Promise<{ major: number; minor: number; version: string }> {
  const path = toolPath(tool, binDir);
  let stdout: string;
  try {
    ({ stdout } = await run(path, ['--version'], { timeout: 15_000 }));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new OperatorError(
      missing
        ? `${tool} not found (looked for ${path}${binDir ? '' : ' on PATH'})`
        : `${tool} --version failed: ${errorMessage(err)}`,
      {
        exitCode: EXIT.UNAVAILABLE,
        hint: `install the PostgreSQL client (apt-get install postgresql-client-${IMAGE_CLIENT_MAJOR}; the Docker image ships it) or set PG_CLIENT_BIN_DIR`,
        cause: err,
      },
    );
  }
  const m = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(stdout);
  if (!m)
    throw new OperatorError(`cannot read the version of ${path}: ${stdout.trim()}`, {
      exitCode: EXIT.UNAVAILABLE,
    });
  return {
    major: Number(m[1]),
    minor: Number(m[2] ?? 0),
    version: stdout.trim().replace(/^.*\(PostgreSQL\)\s+/, ''),
  };
}

/**
 * Settings a client program's session takes for itself whatever the role or database sets (as pg_dump
 * does): an inherited statement_timeout or lock_timeout must not break a backup or a restore. Only
 * settings the server knows may be named at connection, hence the version.
 */
export function sessionOptions(serverVersionNum: number): string {
  const names = ['statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout'];
  if (serverVersionNum >= 140000) names.push('idle_session_timeout');
  if (serverVersionNum >= 170000) names.push('transaction_timeout');
  return names.map((n) => `-c ${n}=0`).join(' ');
}

/**
 * A database name as a libpq connection string. A program that takes a database as an argument
 * reads one holding "=" as a connection string: a database named "dbname=other" would be "other".
 */
export function dbnameConninfo(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** libpq environment for a child: host, port, user, database, password, TLS. */
export function libpqEnv(
  target: ConnectionTarget,
  ssl: TlsSettings,
  opts: { database?: string; clientMajor?: number } = {},
): NodeJS.ProcessEnv {
  const database = opts.database ?? target.database;
  const mode = effectiveSslMode(ssl, target.host);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LANG: 'C.UTF-8',
    PGHOST: target.host,
    PGPORT: String(target.port),
    PGDATABASE: database,
    PGAPPNAME: 'pg-maintd',
    PGCONNECT_TIMEOUT: '30',
    PGSSLMODE:
      mode === 'verify-full' || mode === 'verify-ca' ? (ssl.rejectUnauthorized ? mode : 'require') : mode,
  };
  // the user the daemon's own pool connects as (PGUSER, else the OS user), not one libpq would
  // guess from an environment it no longer has
  env.PGUSER = target.user ?? defaultUser();
  const password = target.password ?? process.env.PGPASSWORD;
  if (password) env.PGPASSWORD = password;
  if (process.env.PGPASSFILE) env.PGPASSFILE = process.env.PGPASSFILE;
  // Without DB_SSL_ROOT_CERT, verify against the system CA store, as the daemon's own connections do.
  // libpq knows "system" from version 16; older clients look for ~/.postgresql/root.crt instead.
  if (ssl.rootCertFile) env.PGSSLROOTCERT = ssl.rootCertFile;
  else if (
    (env.PGSSLMODE === 'verify-full' || env.PGSSLMODE === 'verify-ca') &&
    (opts.clientMajor ?? 0) >= 16
  ) {
    env.PGSSLROOTCERT = 'system';
  }
  if (ssl.certFile) env.PGSSLCERT = ssl.certFile;
  if (ssl.keyFile) env.PGSSLKEY = ssl.keyFile;
  return env;
}
