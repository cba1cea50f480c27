/** What a doctor check reports, and the context every check gets. */
import type pg from 'pg';
import type { Config } from '../config/load.js';

export type Status = 'ok' | 'warn' | 'fail' | 'info';

/** Something `--apply` may do on its own: reloadable settings and the extension, nothing else. */
export type Remedy =
  | { kind: 'alter_system'; parameter: string; value: string }
  | { kind: 'create_extension'; extension: string };

export interface Fix {
  /** Exact SQL, in order. */
  sql?: string[];
  /** Steps outside SQL (config files, restarts, package installs), in order. */
  steps?: string[];
  /** The fix only takes effect after a server restart. */
  restart?: boolean;
  /** What `--apply` can do about it (when the role is allowed to). */
  remedies?: Remedy[];
}

export interface Finding {
  /** Stable id, e.g. settings.track_io_timing. */
  id: string;
  status: Status;
  /** What is checked, in a few words. */
  title: string;
  /** What was found: the actual value. */
  found: string;
  /** Why it matters. */
  why: string;
  fix?: Fix;
}

export interface SessionFacts {
  serverVersion: string;
  serverVersionNum: number;
  role: string;
  database: string;
  superuser: boolean;
  createdb: boolean;
  bypassrls: boolean;
  connLimit: number;
  /** Membership whose privileges the role can use (pg_has_role ... 'USAGE'). */
  roles: { pg_monitor: boolean; pg_read_all_stats: boolean; pg_read_all_settings: boolean };
  /** statement_timeout and idle_in_transaction_session_timeout as the session started (before doctor's own SET). */
  startup: Record<string, { setting: string; unit: string | null; source: string }>;
}

export interface CheckContext {
  client: pg.ClientBase;
  config: Config;
  facts: SessionFacts;
  thresholds: { connectionsWarnPct: number; connectionsFailPct: number };
  /** How doctor's own connection was made, the way the daemon's are. */
  connection: { host: string; verified: boolean };
}

export interface Check {
  /** Ids of the findings the check can produce (the first one is used when the check itself fails). */
  ids: string[];
  run(ctx: CheckContext): Promise<Finding | Finding[]>;
}

/** A SQL identifier, quoted when it has to be. */
export function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

/** A SQL string literal. */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

export function alterSystemSql(parameter: string, value: string): string {
  return `ALTER SYSTEM SET ${parameter} = ${quoteLiteral(value)};`;
}

export const RELOAD_SQL = 'SELECT pg_reload_conf();';
