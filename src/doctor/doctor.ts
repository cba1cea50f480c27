/**
 * `pg-maintd doctor`: one connection, every check, and with `apply` the safe fixes followed by the
 * checks again, so the report shows before and after.
 */
import type pg from 'pg';
import type { Config } from '../config/load.js';
import { DbPool } from '../db/pool.js';
import { classify, explainConnectionError } from '../db/sqlstate.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { unavailableError } from '../db/unavailable.js';
import { EXIT, type ExitCode } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import { applyFixes, type ApplyOutcome } from './apply.js';
import { allChecks } from './checks.js';
import type { CheckContext, Finding, SessionFacts, Status } from './finding.js';

export interface DoctorOptions {
  config: Config;
  logger: Logger;
  /** Run the safe fixes (ALTER SYSTEM + reload, CREATE EXTENSION), then check again. */
  apply?: boolean;
  connectionsWarnPct?: number;
  connectionsFailPct?: number;
}

export interface Change {
  id: string;
  before: { status: Status; found: string };
  after: { status: Status; found: string };
}

export interface DoctorReport {
  /** user@host:port/db, without the password. */
  target: string;
  server: { version: string; versionNum: number };
  role: string;
  superuser: boolean;
  findings: Finding[];
  summary: Record<Status, number>;
  exitCode: ExitCode;
  /** Present with `apply`: what was done, what was not and why, and what changed. */
  apply?: ApplyOutcome & { before: Finding[]; changes: Change[] };
}

const FACTS_SQL = `
  SELECT current_setting('server_version') AS server_version,
         current_setting('server_version_num')::int AS server_version_num,
         current_user AS role, current_database() AS database,
         r.rolsuper AS superuser, r.rolcreatedb AS createdb, r.rolbypassrls AS bypassrls,
         r.rolconnlimit AS connlimit,
         pg_has_role(current_user, 'pg_monitor', 'USAGE') AS pg_monitor,
         pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS pg_read_all_stats,
         pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') AS pg_read_all_settings
    FROM pg_roles r WHERE r.rolname = current_user`;

// Read before doctor sets its own limits: these are what every other session of the role starts with.
const STARTUP_SQL = `
  SELECT name, setting, unit, source FROM pg_settings
   WHERE name IN ('statement_timeout', 'idle_in_transaction_session_timeout')`;

async function sessionFacts(client: pg.ClientBase): Promise<SessionFacts> {
  const startup = Object.fromEntries(
    (
      await client.query<{ name: string; setting: string; unit: string | null; source: string }>(STARTUP_SQL)
    ).rows.map((r) => [r.name, { setting: r.setting, unit: r.unit, source: r.source }]),
  );
  const f = (
    await client.query<{
      server_version: string;
      server_version_num: number;
      role: string;
      database: string;
      superuser: boolean;
      createdb: boolean;
      bypassrls: boolean;
      connlimit: number;
      pg_monitor: boolean;
      pg_read_all_stats: boolean;
      pg_read_all_settings: boolean;
    }>(FACTS_SQL)
  ).rows[0]!;
  return {
    serverVersion: f.server_version,
    serverVersionNum: f.server_version_num,
    role: f.role,
    database: f.database,
    superuser: f.superuser,
    createdb: f.createdb,
    bypassrls: f.bypassrls,
    connLimit: f.connlimit,
    roles: {
      pg_monitor: f.pg_monitor,
      pg_read_all_stats: f.pg_read_all_stats,
      pg_read_all_settings: f.pg_read_all_settings,
    },
    startup,
  };
}

/** Runs every check; a check that errors becomes a warning that says so, never a silent gap. */
async function runChecks(ctx: CheckContext): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const check of allChecks()) {
    try {
      const r = await check.run(ctx);
      findings.push(...(Array.isArray(r) ? r : [r]));
    } catch (err) {
      if (classify(err).kind === 'connection_lost') throw err;
      findings.push({
        id: check.ids[0]!,
        status: 'warn',
        title: 'the check could not run',
        found: `error: ${errorMessage(err)}`,
        why: 'a check that cannot run leaves its question unanswered; the error usually names a missing privilege',
      });
    }
  }
  return findings;
}

function summarize(findings: Finding[]): Record<Status, number> {
  const s: Record<Status, number> = { ok: 0, warn: 0, fail: 0, info: 0 };
  for (const f of findings) s[f.status]++;
  return s;
}

function changesBetween(before: Finding[], after: Finding[]): Change[] {
  const changes: Change[] = [];
  for (const a of after) {
    const b = before.find((x) => x.id === a.id);
    if (b && (b.status !== a.status || b.found !== a.found))
      changes.push({
        id: a.id,
        before: { status: b.status, found: b.found },
        after: { status: a.status, found: a.found },
      });
  }
  return changes;
}

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const pool = new DbPool(o.config.db, {
    name: 'doctor',
    logger: o.logger,
    max: 1,
    min: 0,
    acquireTimeoutMs: Math.min(o.config.db.pool.acquireTimeoutMs, 15_000),
    queryTimeoutMs: 60_000,
    applicationName: 'pg-maintd doctor',
  });
  try {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      const { message, hint } = explainConnectionError(err, pool.description);
      throw new OperatorError(message, { hint, exitCode: EXIT.UNAVAILABLE, cause: err });
    }
    try {
      return await diagnose(client, pool, o);
    } catch (err) {
      if (classify(err).kind !== 'connection_lost') throw err;
      throw unavailableError(err, pool.description)!;
    } finally {
      client.release();
    }
  } finally {
    await pool.stop();
  }
}

async function diagnose(client: pg.PoolClient, pool: DbPool, o: DoctorOptions): Promise<DoctorReport> {
  const facts = await sessionFacts(client);
  // Doctor's own queries are catalog reads: keep them from ever queueing behind the application.
  await client.query("SET statement_timeout = '30s'; SET lock_timeout = '2s'");
  const ctx: CheckContext = {
    client,
    config: o.config,
    facts,
    thresholds: {
      connectionsWarnPct: o.connectionsWarnPct ?? 80,
      connectionsFailPct: o.connectionsFailPct ?? 95,
    },
    connection: { host: pool.target.host, verified: pool.verified },
  };
  let findings = await runChecks(ctx);
  let apply: DoctorReport['apply'];
  if (o.apply) {
    const before = findings;
    const outcome = await applyFixes(client, facts, before, o.logger);
    if (outcome.applied.length > 0) findings = await runChecks(ctx);
    apply = { ...outcome, before, changes: changesBetween(before, findings) };
  }
  const summary = summarize(findings);
  return {
    target: pool.description,
    server: { version: facts.serverVersion, versionNum: facts.serverVersionNum },
    role: facts.role,
    superuser: facts.superuser,
    findings,
    summary,
    exitCode: summary.fail > 0 ? EXIT.FAILURE : EXIT.OK,
    ...(apply ? { apply } : {}),
  };
}
