/**
 * The lease table, pgmaintd.leases, in the database of DATABASE_URL: where the replicas elect the
 * leader of each job. It is only as safe as the hands that can write it, so it is trusted only when
 * no role but pg-maintd's own (and superusers, who can do anything anyway) can write it or put
 * anything in its schema:
 * - the schema `pgmaintd` and the table are owned by the current role or a superuser;
 * - no other role may CREATE in the schema, or hold any privilege but SELECT on the table or its
 *   columns (REFERENCES could make our DELETE fail, TRIGGER run code in our sessions);
 * - no other role is a member of the current role (it could act as it);
 * - nothing on the table (a trigger left from a privilege since revoked, say) runs another role's code.
 * pg-maintd creates the schema and the table when missing (the role needs CREATE on the database,
 * or a DBA creates the schema for it). A squatted or shared schema is never written to: the
 * problem and the SQL that fixes it are returned instead.
 * Every name is schema-qualified and every operand typed, so objects another role puts on the
 * search_path cannot stand in for pg_catalog's.
 */
import { foreignCodeOn } from './foreign-code.js';
import { loginRolesReaching } from './role-reach.js';
import { classify } from './sqlstate.js';
import type { DbPool } from './pool.js';
import { errorMessage } from '../core/errors.js';

export const LEASE_SCHEMA = 'pgmaintd';
export const LEASE_TABLE = 'pgmaintd.leases';

/** Why the lease table cannot be trusted or made, and what a DBA runs to fix it. */
export interface LeaseProblem {
  problem: string;
  fix: string;
  /** The database is a hot standby (read-only): no lease can be taken there, nothing to fix. */
  standby?: true;
}

/** Left out of the writers: trusted roles, and members of pg-maintd's role (reported as such). */
const notMine = (r: string) =>
  `${r} IN (SELECT oid FROM trusted) OR pg_catalog.pg_has_role(${r}, (SELECT oid FROM me), 'MEMBER')`;

const INSPECT_SQL = `
  WITH me AS (
    SELECT r.oid, r.rolname FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER
  ), ns AS (
    SELECT n.oid, n.nspowner, coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner)) AS acl
      FROM pg_catalog.pg_namespace n WHERE n.nspname = '${LEASE_SCHEMA}'
  ), tbl AS (
    SELECT c.oid, c.relowner, c.relkind::text AS relkind,
           coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner)) AS acl
      FROM pg_catalog.pg_class c JOIN ns ON c.relnamespace = ns.oid WHERE c.relname = 'leases'
  ), trusted AS (
    -- whoever may write the table without being a threat: the current role and superusers
    SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper OR r.oid = (SELECT oid FROM me)
  )
  SELECT pg_catalog.quote_ident((SELECT rolname FROM me)) AS me,
         pg_catalog.pg_is_in_recovery() AS standby,
         EXISTS (SELECT FROM ns) AS schema_exists,
         (SELECT pg_catalog.pg_get_userbyid(nspowner) FROM ns) AS schema_owner,
         (SELECT nspowner IN (SELECT oid FROM trusted) FROM ns) AS schema_owner_ok,
         -- by privilege, not by ACL entry: what a role inherits or can SET ROLE to counts
         -- (pg_write_all_data, say; PUBLIC named as such; a member of pg-maintd's role is reported
         -- as one, below)
         CASE WHEN EXISTS (SELECT FROM ns, pg_catalog.aclexplode(ns.acl) a
                            WHERE a.grantee = 0::oid AND a.privilege_type = 'CREATE')
              THEN ARRAY['PUBLIC']
              ELSE ${loginRolesReaching(
                (g) => `pg_catalog.has_schema_privilege(${g}, (SELECT oid FROM ns), 'CREATE')`,
                notMine,
              )} END AS schema_writers,
         (SELECT relkind FROM tbl) AS table_kind,
         (SELECT pg_catalog.pg_get_userbyid(relowner) FROM tbl) AS table_owner,
         (SELECT relowner IN (SELECT oid FROM trusted) FROM tbl) AS table_owner_ok,
         CASE WHEN EXISTS (SELECT FROM tbl, pg_catalog.aclexplode(tbl.acl) a
                            WHERE a.grantee = 0::oid AND a.privilege_type <> 'SELECT')
              THEN ARRAY['PUBLIC']
              ELSE ${loginRolesReaching(
                (g) =>
                  `pg_catalog.has_table_privilege(${g}, (SELECT oid FROM tbl), 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                   OR pg_catalog.has_any_column_privilege(${g}, (SELECT oid FROM tbl), 'INSERT, UPDATE, REFERENCES')`,
                notMine,
              )} END AS table_writers,
         ARRAY(SELECT pg_catalog.quote_ident(r.rolname) FROM pg_catalog.pg_roles r
                WHERE r.oid NOT IN (SELECT oid FROM trusted)
                  AND pg_catalog.pg_has_role(r.oid, (SELECT oid FROM me), 'MEMBER')
                ORDER BY 1) AS members,
         ${foreignCodeOn((rel) => `${rel} = (SELECT oid FROM tbl)`)} AS table_foreign_code`;

interface Inspection {
  me: string;
  standby: boolean;
  schema_exists: boolean;
  schema_owner: string | null;
  schema_owner_ok: boolean | null;
  schema_writers: string[];
  table_kind: string | null;
  table_owner: string | null;
  table_owner_ok: boolean | null;
  table_writers: string[];
  members: string[];
  table_foreign_code: string[];
}

const CREATE_SCHEMA_SQL = `CREATE SCHEMA IF NOT EXISTS ${LEASE_SCHEMA}`;
const CREATE_TABLE_SQL = `
  CREATE TABLE IF NOT EXISTS ${LEASE_TABLE} (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    token       text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    done_slot   timestamptz
  )`;

/**
 * Makes sure the lease table exists and only pg-maintd's role can write it. Undefined when it can
 * be used; the problem and its fix otherwise. Database errors other than a missing privilege throw.
 */
export async function ensureLeaseTable(pool: DbPool): Promise<LeaseProblem | undefined> {
  let s = await inspect(pool);
  if (s.standby)
    return {
      problem: `the database of DATABASE_URL (${pool.description}) is a standby: the leases that elect the leader need a writable primary`,
      fix: 'point DATABASE_URL at the primary (a standby can still be watched for metrics)',
      standby: true,
    };
  if (!s.schema_exists) {
    const denied = await tryCreate(pool, CREATE_SCHEMA_SQL);
    if (denied)
      return {
        problem: `the role ${s.me} may not create the schema ${LEASE_SCHEMA} for its leases (${denied})`,
        fix: `a DBA runs, in the database of DATABASE_URL: CREATE SCHEMA ${LEASE_SCHEMA} AUTHORIZATION ${s.me};`,
      };
    s = await inspect(pool);
  }
  const schema = schemaProblem(s);
  if (schema) return schema;
  if (!s.table_kind) {
    const denied = await tryCreate(pool, CREATE_TABLE_SQL);
    if (denied)
      return {
        problem: `the role ${s.me} may not create ${LEASE_TABLE} (${denied})`,
        fix: `a DBA runs: ALTER SCHEMA ${LEASE_SCHEMA} OWNER TO ${s.me};`,
      };
    s = await inspect(pool);
  }
  return schemaProblem(s) ?? tableProblem(s);
}

async function inspect(pool: DbPool): Promise<Inspection> {
  return (await pool.query<Inspection>(INSPECT_SQL)).rows[0]!;
}

/** Runs a CREATE ... IF NOT EXISTS; a concurrent replica creating it too is no error. */
async function tryCreate(pool: DbPool, sql: string): Promise<string | undefined> {
  try {
    await pool.query(sql);
    return undefined;
  } catch (err) {
    const { kind, code } = classify(err);
    if (kind === 'permission_denied') return errorMessage(err);
    // unique_violation on the catalogs, duplicate_schema, duplicate_table, or duplicate_object (the
    // table's row type, "type leases already exists", when the other replica got there first):
    // created meanwhile
    if (code === '23505' || code === '42P06' || code === '42P07' || code === '42710') return undefined;
    throw err;
  }
}

function schemaProblem(s: Inspection): LeaseProblem | undefined {
  if (!s.schema_exists) return undefined;
  if (!s.schema_owner_ok)
    return {
      problem: `the schema ${LEASE_SCHEMA} is owned by ${s.schema_owner}, not by pg-maintd's role ${s.me} or a superuser: another role may have squatted it`,
      fix: `a DBA checks what ${s.schema_owner} put there, then runs: DROP SCHEMA ${LEASE_SCHEMA} CASCADE; CREATE SCHEMA ${LEASE_SCHEMA} AUTHORIZATION ${s.me}; (leases hold nothing worth keeping)`,
    };
  if (s.schema_writers.length)
    return {
      problem: `other roles may create objects in the schema ${LEASE_SCHEMA}: ${s.schema_writers.join(', ')}`,
      fix: `a DBA runs: REVOKE CREATE ON SCHEMA ${LEASE_SCHEMA} FROM ${s.schema_writers.join(', ')};`,
    };
  return membersProblem(s);
}

/** What DROP takes for each relkind that could sit where the table should be. */
const DROP_KIND: Record<string, string> = {
  r: 'TABLE',
  p: 'TABLE',
  v: 'VIEW',
  m: 'MATERIALIZED VIEW',
  f: 'FOREIGN TABLE',
  S: 'SEQUENCE',
  i: 'INDEX',
  c: 'TYPE',
};

function tableProblem(s: Inspection): LeaseProblem | undefined {
  if (s.table_kind !== 'r' || !s.table_owner_ok)
    return {
      problem: `${LEASE_TABLE} is ${s.table_kind !== 'r' ? `not a table (relkind ${s.table_kind})` : `owned by ${s.table_owner}, not by pg-maintd's role ${s.me} or a superuser`}`,
      fix: `a DBA checks what it is, then runs: DROP ${DROP_KIND[s.table_kind ?? ''] ?? 'TABLE'} ${LEASE_TABLE} CASCADE; (pg-maintd creates it again; leases hold nothing worth keeping)`,
    };
  if (s.table_writers.length)
    return {
      problem: `other roles hold privileges to change ${LEASE_TABLE}: ${s.table_writers.join(', ')}`,
      fix: `a DBA runs: REVOKE ALL ON ${LEASE_TABLE} FROM ${s.table_writers.join(', ')}; (and any column privileges: REVOKE ALL (name, holder, token, acquired_at, expires_at) ON ${LEASE_TABLE} FROM ...)`,
    };
  // made while someone held a privilege since taken back: a REVOKE leaves it in place
  if (s.table_foreign_code.length)
    return {
      problem: `${LEASE_TABLE} runs code of other roles: ${s.table_foreign_code.join(', ')}`,
      fix: `a DBA checks what it is, then runs: DROP TABLE ${LEASE_TABLE} CASCADE; (pg-maintd creates it again; leases hold nothing worth keeping)`,
    };
  return undefined;
}

function membersProblem(s: Inspection): LeaseProblem | undefined {
  if (!s.members.length) return undefined;
  return {
    problem: `other roles are members of pg-maintd's role ${s.me} and can act as it: ${s.members.join(', ')}`,
    fix: `a DBA runs: REVOKE ${s.me} FROM ${s.members.join(', ')}; (or give pg-maintd a role of its own)`,
  };
}
