/**
 * `doctor --apply`: the safe fixes only. Reloadable settings through ALTER SYSTEM and
 * pg_reload_conf(), and CREATE EXTENSION pg_stat_statements once it is preloaded. Nothing that needs
 * a restart, ends sessions or changes data; those are printed as manual steps. Each fix runs only when
 * the role may run it; otherwise the missing privilege is named, with the SQL for a DBA.
 */
import type pg from 'pg';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import {
  RELOAD_SQL,
  alterSystemSql,
  quoteIdent,
  type Finding,
  type Remedy,
  type SessionFacts,
} from './finding.js';

export interface Applied {
  id: string;
  sql: string;
}

export interface NotAllowed {
  id: string;
  /** What a DBA runs instead (as a superuser). */
  sql: string[];
  /** Which privilege the role lacks. */
  missing: string;
  /** Or grants that would let this role run the fix itself. */
  grants: string[];
}

export interface ApplyOutcome {
  applied: Applied[];
  failed: Array<Applied & { error: string }>;
  notAllowed: NotAllowed[];
  /** Fixes --apply never runs (restarts, grants, config outside SQL): for the operator. */
  manual: Array<{ id: string; sql: string[]; steps: string[]; restart: boolean }>;
  reloaded: boolean;
}

const remedySql = (r: Remedy): string =>
  r.kind === 'alter_system'
    ? alterSystemSql(r.parameter, r.value)
    : // named: pg-maintd's sessions search pg_catalog alone, which CREATE EXTENSION would pick otherwise
      `CREATE EXTENSION IF NOT EXISTS ${quoteIdent(r.extension)} SCHEMA public;`;

// allow_alter_system exists from PostgreSQL 17; has_parameter_privilege from 15.
const ALTER_SYSTEM_SQL = `
  SELECT coalesce(current_setting('allow_alter_system', true), 'on') AS allowed,
         has_function_privilege('pg_catalog.pg_reload_conf()', 'EXECUTE') AS can_reload`;
const PARAMETER_SQL = `SELECT has_parameter_privilege($1, 'ALTER SYSTEM') AS ok`;
const EXTENSION_SQL = `
  SELECT v.trusted, has_database_privilege(current_database(), 'CREATE') AS can_create
    FROM pg_available_extensions a
    JOIN pg_available_extension_versions v ON v.name = a.name AND v.version = a.default_version
   WHERE a.name = $1`;

/** Why the role may not run a remedy, or undefined when it may. */
async function whyNot(
  client: pg.ClientBase,
  facts: SessionFacts,
  r: Remedy,
): Promise<Omit<NotAllowed, 'id' | 'sql'> | undefined> {
  const role = quoteIdent(facts.role);
  if (r.kind === 'create_extension') {
    if (facts.superuser) return undefined;
    const e = (await client.query<{ trusted: boolean; can_create: boolean }>(EXTENSION_SQL, [r.extension]))
      .rows[0];
    if (e?.trusted && e.can_create) return undefined;
    return e?.trusted
      ? {
          missing: `CREATE on database ${facts.database}`,
          grants: [`GRANT CREATE ON DATABASE ${quoteIdent(facts.database)} TO ${role};`],
        }
      : {
          missing: `superuser: ${r.extension} is not a trusted extension, so only a superuser can create it`,
          grants: [],
        };
  }
  const s = (await client.query<{ allowed: string; can_reload: boolean }>(ALTER_SYSTEM_SQL)).rows[0]!;
  if (s.allowed === 'off')
    return {
      missing: 'ALTER SYSTEM is disabled on this server (allow_alter_system = off): edit postgresql.conf',
      grants: [],
    };
  if (facts.superuser) return undefined;
  if (facts.serverVersionNum < 150000)
    return {
      missing: `superuser: before PostgreSQL 15 only a superuser can run ALTER SYSTEM (15 added GRANT ALTER SYSTEM ON PARAMETER)`,
      grants: [],
    };
  const param = (await client.query<{ ok: boolean }>(PARAMETER_SQL, [r.parameter])).rows[0]!.ok;
  const missing: string[] = [];
  const grants: string[] = [];
  if (!param) {
    missing.push(`ALTER SYSTEM on parameter ${r.parameter}`);
    grants.push(`GRANT ALTER SYSTEM ON PARAMETER ${r.parameter} TO ${role};`);
  }
  if (!s.can_reload) {
    missing.push('EXECUTE on pg_reload_conf()');
    grants.push(`GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO ${role};`);
  }
  return missing.length ? { missing: missing.join(' and '), grants } : undefined;
}

/** Waits until this backend has re-read the configuration (pg_reload_conf only signals). */
async function waitForReload(client: pg.ClientBase, since: string, timeoutMs = 5000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const r = await client.query<{ done: boolean }>('SELECT pg_conf_load_time() > $1::timestamptz AS done', [
      since,
    ]);
    if (r.rows[0]!.done) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

export async function applyFixes(
  client: pg.ClientBase,
  facts: SessionFacts,
  findings: Finding[],
  logger: Logger,
): Promise<ApplyOutcome> {
  const out: ApplyOutcome = { applied: [], failed: [], notAllowed: [], manual: [], reloaded: false };
  const settings: Array<{ id: string; remedy: Remedy }> = [];
  const extensions: Array<{ id: string; remedy: Remedy }> = [];
  for (const f of findings) {
    if (f.status === 'ok' || !f.fix) continue;
    const remedies = f.fix.remedies ?? [];
    if (remedies.length === 0) {
      if (f.status !== 'info')
        out.manual.push({
          id: f.id,
          sql: f.fix.sql ?? [],
          steps: f.fix.steps ?? [],
          restart: f.fix.restart === true,
        });
      continue;
    }
    for (const remedy of remedies)
      (remedy.kind === 'alter_system' ? settings : extensions).push({ id: f.id, remedy });
  }

  const run = async ({ id, remedy }: { id: string; remedy: Remedy }): Promise<boolean> => {
    const sql = remedySql(remedy);
    const no = await whyNot(client, facts, remedy);
    if (no) {
      out.notAllowed.push({
        id,
        sql: remedy.kind === 'alter_system' ? [sql, RELOAD_SQL] : [sql],
        ...no,
      });
      return false;
    }
    try {
      await client.query(sql);
      out.applied.push({ id, sql });
      logger.info({ check: id, sql }, 'doctor applied a fix');
      return true;
    } catch (err) {
      out.failed.push({ id, sql, error: errorMessage(err) });
      return false;
    }
  };

  let changed = false;
  for (const s of settings) changed = (await run(s)) || changed;
  if (changed) {
    const since = (await client.query<{ t: string }>('SELECT pg_conf_load_time()::text AS t')).rows[0]!.t;
    await client.query(RELOAD_SQL);
    out.reloaded = await waitForReload(client, since);
    logger.info({ reloaded: out.reloaded }, 'doctor reloaded the server configuration');
  }
  for (const e of extensions) await run(e);
  return out;
}
