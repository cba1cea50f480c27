/**
 * One pg_dump run: version check, an exported snapshot (so the manifest's row counts match the dump
 * exactly), the child process, and the tail of its stderr for the log when it fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import type pg from 'pg';
import { LEASE_SCHEMA } from '../db/lease-table.js';
import type { DbPool } from '../db/pool.js';
import { explainConnectionError } from '../db/sqlstate.js';
import type { TlsSettings } from '../db/tls.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { IMAGE_CLIENT_MAJOR, libpqEnv, toolMajor, toolPath } from '../programs/client-tools.js';
import type { BackupFormat } from './naming.js';
import type { Ownership } from './manifest.js';

export class BackupError extends OperatorError {
  constructor(
    readonly reason: FailureReason,
    message: string,
    opts: { hint?: string; cause?: unknown } = {},
  ) {
    super(message, { ...opts, exitCode: EXIT.FAILURE });
    this.name = 'BackupError';
  }
}

/** The fixed set of failure reasons (a metric label). */
export const FAILURE_REASONS = [
  'pg_dump',
  'version_mismatch',
  'database',
  'storage',
  'timeout',
  'aborted',
  'lease_lost',
  'standby_lagging',
  'encryption',
  'internal',
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export interface DumpOptions {
  /** A pool on the database to dump; one of its connections holds the snapshot. */
  pool: DbPool;
  ssl: TlsSettings;
  format: BackupFormat;
  /** keep: owners and GRANTs are in the dump; omit: --no-owner --no-privileges (BACKUP_OWNERSHIP). */
  ownership: Ownership;
  clientBinDir: string | undefined;
  rowCountMaxTableBytes: number;
  /** What pg_dump and the counts wait for a table's lock (BACKUP_LOCK_WAIT_TIMEOUT). */
  lockWaitTimeoutMs: number;
}

export interface RowCount {
  rows: number;
  exact: boolean;
}

export interface RunningDump {
  stdout: Readable;
  child: ChildProcess;
  pgDumpVersion: string;
  serverVersion: string;
  serverVersionNum: number;
  /** pg_control_system().system_identifier: which cluster this is. */
  systemIdentifier: string;
  /** The database server's clock when the snapshot was taken. */
  databaseTime: Date;
  /** Resolves when pg_dump exited 0; rejects with its stderr tail otherwise. */
  exited: Promise<void>;
  /** What pg_dump warned about (complete once it exited). */
  warnings: string[];
  /** Row counts taken in the dump's snapshot. */
  rowCounts: Promise<Record<string, RowCount>>;
  /** Ends the snapshot transaction and frees its connection; safe to call twice. */
  release(abandon?: boolean): Promise<void>;
  kill(): void;
}

const TABLES_SQL = `
  SELECT format('%I.%I', n.nspname, c.relname) AS name,
         pg_relation_size(c.oid) AS bytes,
         GREATEST(c.reltuples, 0)::bigint AS estimate
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'r' AND c.relpersistence = 'p'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${LEASE_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_%'
   ORDER BY 1`;

/** libpq's and the server's words (pg_dump runs with LANG=C.UTF-8) for a server that went away. */
const DATABASE_GONE =
  /terminating connection due to administrator command|server closed the connection unexpectedly|no connection to the server|could not connect to server|connection to server at .* failed|Connection refused|the database system is (shutting down|starting up|in recovery mode)|SSL SYSCALL error: EOF detected/i;

export async function startDump(o: DumpOptions): Promise<RunningDump> {
  let tool: { major: number; version: string };
  try {
    tool = await toolMajor('pg_dump', o.clientBinDir);
  } catch (err) {
    const e = err as OperatorError;
    throw new BackupError('pg_dump', e.message, { hint: e.hint, cause: err });
  }
  let client: pg.PoolClient;
  try {
    client = await o.pool.connect();
  } catch (err) {
    const { message, hint } = explainConnectionError(err, o.pool.description);
    throw new BackupError('database', message, { hint, cause: err });
  }
  let released = false;
  let backendPid: number | undefined;
  /** Ends the snapshot session. `abandon`: it may be stuck (a count waiting on a lock): cancel it, drop the connection. */
  const release = async (abandon = false) => {
    if (released) return;
    released = true;
    if (abandon) {
      if (backendPid) await o.pool.query('SELECT pg_cancel_backend($1)', [backendPid]).catch(() => undefined);
      client.release(true);
      return;
    }
    await client.query('ROLLBACK').catch(() => undefined);
    client.release();
  };
  try {
    // the snapshot session holds a transaction open for the whole dump and counts rows: timeouts a
    // role or database sets (statement, lock, idle in transaction, transaction) must not end it
    await client.query(SESSION_SETTINGS_SQL);
    // as pg_dump does: a table whose row-level security would apply is an error, never a policy
    // (another role's code) run with pg-maintd's privileges while it counts
    await client.query('SET row_security = off');
    await client.query(
      `SELECT pg_catalog.set_config('lock_timeout', '${Math.round(o.lockWaitTimeoutMs)}', false)`,
    );
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const info = await client.query<{
      snapshot: string;
      num: string;
      version: string;
      pid: number;
      system: string;
      now: Date;
    }>(
      "SELECT pg_export_snapshot() AS snapshot, current_setting('server_version_num') AS num, current_setting('server_version') AS version, pg_backend_pid() AS pid, (SELECT system_identifier::text FROM pg_control_system()) AS system, now() AS now",
    );
    const { snapshot, num, version, pid, system, now } = info.rows[0]!;
    backendPid = pid;
    const serverMajor = Math.floor(Number(num) / 10000);
    if (tool.major < serverMajor) {
      throw new BackupError(
        'version_mismatch',
        `pg_dump ${tool.major} (${tool.version}) is older than the server, PostgreSQL ${serverMajor} (${version}); pg_dump cannot dump a newer server`,
        {
          hint: `install postgresql-client-${serverMajor} or newer (the Docker image ships ${IMAGE_CLIENT_MAJOR}), or point PG_CLIENT_BIN_DIR at it`,
        },
      );
    }
    const args = [
      `--format=${o.format}`,
      `--snapshot=${snapshot}`,
      // a restore puts back what the database was; the roles named come from the cluster's globals
      ...(o.ownership === 'omit' ? ['--no-owner', '--no-privileges'] : []),
      '--no-password',
      `--lock-wait-timeout=${Math.round(o.lockWaitTimeoutMs)}`,
      // pg-maintd's own leases are its running state, not the application's data
      `--exclude-schema=${LEASE_SCHEMA}`,
    ];
    if (o.format === 'plain') args.push('--clean', '--if-exists');
    else args.push('--compress=0'); // gzip compresses the stream; compressing twice only burns CPU
    const child = spawn(toolPath('pg_dump', o.clientBinDir), args, {
      env: libpqEnv(o.pool.target, o.ssl, { clientMajor: tool.major }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderrTail = '';
    const warnings: string[] = [];
    let partial = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderrTail = (stderrTail + d.toString()).slice(-4000);
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!.slice(-2000);
      for (const l of lines) keepWarning(warnings, l);
    });
    child.stderr!.on('end', () => keepWarning(warnings, partial));
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', (err) =>
        reject(new BackupError('pg_dump', `cannot run pg_dump: ${err.message}`, { cause: err })),
      );
      child.on('close', (code, signal) => {
        if (code === 0) return resolve();
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        // pg_dump failing because the server went away is the database's failure, not pg_dump's
        const gone = !signal && DATABASE_GONE.test(stderrTail);
        reject(
          Object.assign(
            new BackupError(
              gone ? 'database' : 'pg_dump',
              `pg_dump ${how}: ${stderrTail.trim().split('\n').slice(-5).join(' | ') || '(no stderr)'}`,
              gone
                ? {
                    hint: 'the database server went away during the dump (stopped, restarted or unreachable); the next scheduled run tries again once it is back',
                  }
                : {},
            ),
            {
              stderrTail,
            },
          ),
        );
      });
    });
    exited.catch(() => undefined); // observed by the caller
    const rowCounts = countRows(client, o.rowCountMaxTableBytes);
    rowCounts.catch(() => undefined);
    return {
      stdout: child.stdout!,
      child,
      pgDumpVersion: tool.version,
      serverVersion: version,
      serverVersionNum: Number(num),
      systemIdentifier: system,
      databaseTime: now,
      exited,
      warnings,
      rowCounts,
      release,
      kill: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      },
    };
  } catch (err) {
    await release(true);
    if (err instanceof BackupError) throw err;
    throw new BackupError(
      'database',
      `cannot start the dump of ${o.pool.description}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

/** Settings the snapshot session takes for itself; only those the server knows (by version). */
const SESSION_SETTINGS_SQL = `SELECT pg_catalog.set_config(name, '0', false) FROM pg_catalog.pg_settings
  WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout', 'transaction_timeout')`;

/** pg_dump's warning lines ("pg_dump: warning: ...", with their detail and hint lines), at most 100. */
function keepWarning(warnings: string[], line: string): void {
  // eslint-disable-next-line no-control-regex
  const text = line.replace(/[\x00-\x1f\x7f]/g, ' ').trim();
  if (!/^pg_dump: (warning|detail|hint): /.test(text) || warnings.length >= 100) return;
  warnings.push(text.slice(0, 2000));
}

/** Exact counts for tables up to the size limit, planner estimates above it; in the dump's snapshot. */
async function countRows(client: pg.PoolClient, maxBytes: number): Promise<Record<string, RowCount>> {
  const tables = await client.query<{ name: string; bytes: string; estimate: string }>(TABLES_SQL);
  const counts: Record<string, RowCount> = {};
  for (const t of tables.rows) {
    if (Number(t.bytes) <= maxBytes) {
      const r = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${t.name}`);
      counts[t.name] = { rows: Number(r.rows[0]!.n), exact: true };
    } else {
      counts[t.name] = { rows: Number(t.estimate), exact: false };
    }
  }
  return counts;
}
