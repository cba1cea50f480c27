/**
 * What the daemon's role may do: read the statistics views (pg_monitor), connect to the databases it
 * watches and backs up, create scratch databases for restore drills, read every table for pg_dump,
 * and no more (not a superuser).
 */
import { drillsOnThisServer } from './connections.js';
import { quoteIdent, type Check, type Finding } from './finding.js';
import { describeSource, humanMs, plural, settingMs } from './format.js';

const superuser: Check = {
  ids: ['role.superuser'],
  async run({ facts }) {
    const r = quoteIdent(facts.role);
    const base = {
      id: 'role.superuser',
      title: `${facts.role} is not a superuser (least privilege)`,
      why: 'a superuser bypasses every permission check and row-level security: a leaked DATABASE_URL or a bug can read or destroy everything. pg-maintd needs pg_monitor, CONNECT, read access for backups and CREATEDB for drills',
    };
    if (!facts.superuser) return { ...base, status: 'ok', found: `${facts.role} is not a superuser` };
    const readAll =
      facts.serverVersionNum >= 140000
        ? ['GRANT pg_read_all_data TO pgmaintd;']
        : [
            '-- for each schema s: GRANT USAGE ON SCHEMA s TO pgmaintd; GRANT SELECT ON ALL TABLES IN SCHEMA s TO pgmaintd; GRANT SELECT ON ALL SEQUENCES IN SCHEMA s TO pgmaintd;',
          ];
    return {
      ...base,
      status: 'warn',
      found: `${facts.role} is a superuser`,
      fix: {
        sql: [
          'CREATE ROLE pgmaintd LOGIN;',
          'GRANT pg_monitor TO pgmaintd;',
          ...readAll,
          'ALTER ROLE pgmaintd CREATEDB;',
          '-- only if backed-up tables use row-level security: ALTER ROLE pgmaintd BYPASSRLS;',
        ],
        steps: [
          'set its password (psql: \\password pgmaintd) and point DATABASE_URL at pgmaintd',
          `keep ${r} for the DBA, and run pg-maintd doctor --apply as it only when settings need changing`,
        ],
      },
    };
  },
};

const monitoring: Check = {
  ids: ['role.monitoring'],
  async run({ facts }) {
    const { pg_monitor, pg_read_all_stats, pg_read_all_settings } = facts.roles;
    const base = {
      id: 'role.monitoring',
      title: `${facts.role} can read the statistics views (pg_monitor)`,
      why: 'without pg_read_all_stats other sessions show as <insufficient privilege> in pg_stat_activity (no state, query or wait events) and pg_stat_statements shows only this role’s statements; without pg_read_all_settings shared_preload_libraries cannot be read',
    };
    if (facts.superuser) return { ...base, status: 'ok', found: 'superuser (sees everything)' };
    if (pg_monitor) return { ...base, status: 'ok', found: 'member of pg_monitor' };
    const yes = (b: boolean) => (b ? 'yes' : 'no');
    const found = `pg_monitor: no, pg_read_all_stats: ${yes(pg_read_all_stats)}, pg_read_all_settings: ${yes(pg_read_all_settings)}`;
    if (pg_read_all_stats && pg_read_all_settings) return { ...base, status: 'ok', found };
    return {
      ...base,
      status: 'warn',
      found,
      fix: { sql: [`GRANT pg_monitor TO ${quoteIdent(facts.role)};`] },
    };
  },
};

const CONNECT_SQL = `
  SELECT w.name, d.datallowconn AS allow,
         CASE WHEN d.datname IS NOT NULL THEN has_database_privilege(d.datname, 'CONNECT') END AS connect
    FROM unnest($1::text[]) AS w(name) LEFT JOIN pg_database d ON d.datname = w.name
   ORDER BY w.name`;

const connect: Check = {
  ids: ['role.connect'],
  async run({ client, config, facts }) {
    const wanted = new Set([facts.database, ...config.backup.databases]);
    if (config.metrics.databases !== '*') for (const d of config.metrics.databases) wanted.add(d);
    const rows = (
      await client.query<{ name: string; allow: boolean | null; connect: boolean | null }>(CONNECT_SQL, [
        [...wanted],
      ])
    ).rows;
    const r = quoteIdent(facts.role);
    const missing = rows.filter((x) => x.allow === null);
    const closed = rows.filter((x) => x.allow === false);
    const denied = rows.filter((x) => x.allow && !x.connect);
    const base = {
      id: 'role.connect',
      title: `${facts.role} can connect to the databases it works on`,
      why: 'pg-maintd connects to the database of DATABASE_URL, each of BACKUP_DATABASES and each of METRICS_DATABASES; one it cannot reach has no backups or table metrics',
    };
    const star =
      config.metrics.databases === '*' ? ' (METRICS_DATABASES=* takes only the ones it may connect to)' : '';
    if (missing.length + closed.length + denied.length === 0)
      return { ...base, status: 'ok', found: `CONNECT on ${rows.map((x) => x.name).join(', ')}${star}` };
    const parts = [
      ...missing.map((x) => `${x.name} does not exist`),
      ...closed.map((x) => `${x.name} does not allow connections`),
      ...denied.map((x) => `no CONNECT on ${x.name}`),
    ];
    const sql = denied.map((x) => `GRANT CONNECT ON DATABASE ${quoteIdent(x.name)} TO ${r};`);
    const steps =
      missing.length + closed.length > 0
        ? ['fix the database names in BACKUP_DATABASES / METRICS_DATABASES, or create the missing databases']
        : [];
    const finding: Finding = {
      ...base,
      status: 'fail',
      found: parts.join('; '),
      fix: { ...(sql.length ? { sql } : {}), ...(steps.length ? { steps } : {}) },
    };
    return finding;
  },
};

const createdb: Check = {
  ids: ['role.createdb'],
  async run({ config, facts }) {
    const base = {
      id: 'role.createdb',
      title: `${facts.role} can create the scratch databases of restore drills`,
      why: 'a restore drill (BACKUP_VERIFY_SCHEDULE, pg-maintd verify) restores the newest backup into a database it creates and drops; without CREATEDB every drill fails',
    };
    if (config.verify.schedule === 'off')
      return { ...base, status: 'info', found: 'scheduled drills are off (BACKUP_VERIFY_SCHEDULE=off)' };
    if (!drillsOnThisServer(config))
      return {
        ...base,
        status: 'info',
        found: 'drills run on the server or role of VERIFY_DATABASE_URL: not checked here',
        fix: { steps: ['run pg-maintd doctor with DATABASE_URL set to VERIFY_DATABASE_URL to check it'] },
      };
    if (facts.superuser) return { ...base, status: 'ok', found: 'superuser' };
    if (facts.createdb) return { ...base, status: 'ok', found: `${facts.role} has CREATEDB` };
    return {
      ...base,
      status: 'fail',
      found: `${facts.role} lacks CREATEDB, and drills run on this server (${config.verify.schedule})`,
      fix: {
        sql: [`ALTER ROLE ${quoteIdent(facts.role)} CREATEDB;`],
        steps: ['or run drills on another server: VERIFY_DATABASE_URL'],
      },
    };
  },
};

/**
 * A drill restores the backup, and the code in it (CHECK constraints, index expressions, materialized
 * views, with the functions they call) runs as the role that restores it. By default that is the
 * role of DATABASE_URL, which owns the application's database: any role that may create a function
 * and a table there (or whose tables pg-maintd may read) could have its code run as pg-maintd's
 * role, for instance to change that role's password. A role that can only create databases
 * contains it.
 */
const drillIsolation: Check = {
  ids: ['role.drill_isolation'],
  async run({ config, facts }) {
    const base = {
      id: 'role.drill_isolation',
      title: 'restore drills run as a role of their own',
      why: "a drill runs the code in the backup (check constraints, index expressions, materialized views and the functions they call) as the role that restores it; as DATABASE_URL's role, another role's code in the database could act as pg-maintd's role, e.g. change its password",
    };
    if (config.verify.schedule === 'off')
      return { ...base, status: 'info', found: 'scheduled drills are off (BACKUP_VERIFY_SCHEDULE=off)' };
    if (!drillsOnThisServer(config))
      return { ...base, status: 'ok', found: 'drills run as the role of VERIFY_DATABASE_URL' };
    return {
      ...base,
      status: 'warn',
      found: `drills restore as ${facts.role}, the role of DATABASE_URL`,
      fix: {
        sql: ['CREATE ROLE pgmaintd_drill LOGIN CREATEDB;'],
        steps: [
          'give it a password (psql: \\password pgmaintd_drill), and nothing else: no membership, no grants',
          'set VERIFY_DATABASE_URL=postgresql://pgmaintd_drill:<password>@<this host>/postgres (or its password in ~/.pgpass)',
          ...(config.backup.format === 'plain' && config.backup.ownership === 'keep'
            ? [
                'and set BACKUP_FORMAT=custom: that role cannot give the objects of a plain dump that keeps its owners (BACKUP_OWNERSHIP=keep) to them, and only custom-format dumps restore without owners',
              ]
            : []),
        ],
      },
    };
  },
};

// What pg_dump reads: tables and sequences (not extension members). It runs with row_security off, so
// a table whose policies apply to the role (not its owner, or FORCE ROW LEVEL SECURITY) makes it fail.
const READ_SQL = `
  SELECT format('%I.%I', n.nspname, c.relname) AS name, n.nspname AS schema,
         has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') AS readable,
         c.relrowsecurity AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) AS rls
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'S')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
   ORDER BY 1`;

const backupRead: Check = {
  ids: ['role.backup_read'],
  async run({ client, config, facts }) {
    const base = {
      id: 'role.backup_read',
      title: `${facts.role} can read every table pg_dump backs up in ${facts.database}`,
      why: 'pg_dump needs SELECT on every table and sequence, and runs with row_security off: a table without SELECT, or with row-level security that applies to the role, fails the whole backup',
    };
    if (!config.backup.databases.includes(facts.database))
      return {
        ...base,
        status: 'info',
        found: `${facts.database} is not backed up (BACKUP_DATABASES: ${config.backup.databases.join(', ')}); not checked`,
      };
    if (facts.superuser) return { ...base, status: 'ok', found: 'superuser (reads everything)' };
    const rows = (
      await client.query<{ name: string; schema: string; readable: boolean; rls: boolean }>(READ_SQL)
    ).rows;
    const unreadable = rows.filter((x) => !x.readable);
    const rls = facts.bypassrls ? [] : rows.filter((x) => x.rls);
    const total = rows.length;
    if (unreadable.length + rls.length === 0)
      return {
        ...base,
        status: 'ok',
        found: `all ${plural(total, 'table and sequence', 'tables and sequences')} readable`,
      };
    const r = quoteIdent(facts.role);
    const list = (xs: typeof rows) =>
      `${xs
        .slice(0, 5)
        .map((x) => x.name)
        .join(', ')}${xs.length > 5 ? `, and ${xs.length - 5} more` : ''}`;
    const parts: string[] = [];
    const sql: string[] = [];
    if (unreadable.length) {
      parts.push(`${plural(unreadable.length, 'relation')} without SELECT: ${list(unreadable)}`);
      if (facts.serverVersionNum >= 140000) sql.push(`GRANT pg_read_all_data TO ${r};`);
      else
        for (const s of new Set(unreadable.map((x) => x.schema))) {
          const q = quoteIdent(s);
          sql.push(
            `GRANT USAGE ON SCHEMA ${q} TO ${r};`,
            `GRANT SELECT ON ALL TABLES IN SCHEMA ${q} TO ${r};`,
            `GRANT SELECT ON ALL SEQUENCES IN SCHEMA ${q} TO ${r};`,
          );
        }
    }
    if (rls.length) {
      parts.push(`row-level security applies to ${facts.role} on ${list(rls)}`);
      sql.push(`ALTER ROLE ${r} BYPASSRLS;`);
    }
    return {
      ...base,
      status: config.backup.schedule === 'off' ? 'warn' : 'fail',
      found: parts.join('; '),
      fix: { sql },
    };
  },
};

const roleStatementTimeout: Check = {
  ids: ['role.statement_timeout'],
  async run({ facts }) {
    const s = facts.startup.statement_timeout!;
    const ms = settingMs(s.setting, s.unit);
    const base = {
      id: 'role.statement_timeout',
      title: `statement_timeout of ${facts.role}`,
      why: 'pg-maintd limits its own queries (METRICS_STATEMENT_TIMEOUT, readiness, lock_timeout); a role or server default limit also applies to long work it does not limit: the row counts of a backup, restore drills, maintenance',
    };
    if (ms <= 0) return { ...base, status: 'ok', found: '0 (no limit beyond pg-maintd’s own)' };
    return {
      ...base,
      status: 'info',
      found: `${humanMs(ms)} (from ${describeSource(s.source)})`,
      fix: {
        sql: [`ALTER ROLE ${quoteIdent(facts.role)} SET statement_timeout = 0;`],
        steps: [
          'only if backups, drills or maintenance fail with "canceling statement due to statement timeout"',
        ],
      },
    };
  },
};

export function roleChecks(): Check[] {
  return [superuser, monitoring, connect, createdb, drillIsolation, backupRead, roleStatementTimeout];
}
