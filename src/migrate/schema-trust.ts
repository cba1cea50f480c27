/**
 * The schema the migration files run in must be in trusted hands before they run. The files name
 * functions and operators without a schema (`to_tsvector('english', name)`, `status = 'active'`),
 * and PostgreSQL picks the best match for the argument types among every schema on the path,
 * whichever comes first: a `public.to_tsvector(text, varchar)` beats pg_catalog's. Whoever can
 * put such a function in the schema (CREATE on it), replace one there (owning it), or hang a
 * trigger on its tables gets their code run by the migrations as pg-maintd's role, which may hold
 * far more than they do. So the files run only when no login role but pg-maintd's own (and
 * superusers) can do any of that, directly, by inheritance or by SET ROLE. This is PostgreSQL's
 * own secure schema usage pattern (REVOKE CREATE ON SCHEMA public FROM PUBLIC), checked. Default
 * privileges that would hand TRIGGER on the tables the migrations make to another role count as a
 * way in; so does what another role left there while it had one (a trigger on a table, a default
 * or a policy that calls its function), since a REVOKE does not take it away.
 *
 * A schema the files only read from (`auth`, whose `auth.uid()` a migration uses when it exists,
 * as on Supabase) must belong to a superuser or to pg-maintd's role: a role with CREATE on the
 * database could otherwise make it, and decide what the row-level security lets through.
 */
import type pg from 'pg';
import { foreignCodeOn } from '../db/foreign-code.js';
import { loginRolesReaching } from '../db/role-reach.js';
import { EXIT } from '../core/exit-codes.js';
import { MigrationError } from './migration-error.js';

/** Owners of whatever in the schema a file's unqualified name could resolve to, or run. */
const OWNERS = `
  SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid = (SELECT oid FROM ns)
  UNION SELECT relowner FROM pg_catalog.pg_class WHERE relnamespace = (SELECT oid FROM ns)
  UNION SELECT proowner FROM pg_catalog.pg_proc WHERE pronamespace = (SELECT oid FROM ns)
  UNION SELECT oprowner FROM pg_catalog.pg_operator WHERE oprnamespace = (SELECT oid FROM ns)
  UNION SELECT typowner FROM pg_catalog.pg_type WHERE typnamespace = (SELECT oid FROM ns)
  UNION SELECT collowner FROM pg_catalog.pg_collation WHERE collnamespace = (SELECT oid FROM ns)
  UNION SELECT conowner FROM pg_catalog.pg_conversion WHERE connamespace = (SELECT oid FROM ns)
  UNION SELECT opcowner FROM pg_catalog.pg_opclass WHERE opcnamespace = (SELECT oid FROM ns)
  UNION SELECT opfowner FROM pg_catalog.pg_opfamily WHERE opfnamespace = (SELECT oid FROM ns)
  UNION SELECT cfgowner FROM pg_catalog.pg_ts_config WHERE cfgnamespace = (SELECT oid FROM ns)
  UNION SELECT dictowner FROM pg_catalog.pg_ts_dict WHERE dictnamespace = (SELECT oid FROM ns)`;

const TRUST_SQL = `
  WITH ns AS (
    SELECT n.oid, coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner)) AS acl
      FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
  ), owners AS MATERIALIZED (
    -- pg_database_owner (the owner of public since PostgreSQL 15) stands for the database's owner
    SELECT CASE WHEN o.nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'pg_database_owner')
                THEN (SELECT datdba FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
                ELSE o.nspowner END AS oid
      FROM (${OWNERS}) o
  ), holders AS MATERIALIZED (
    -- every role that holds a way in; the login roles that reach one of them are named below
    SELECT g.oid FROM pg_catalog.pg_roles g
     WHERE g.oid IN (SELECT oid FROM owners)
        OR pg_catalog.has_schema_privilege(g.oid, (SELECT oid FROM ns), 'CREATE')
        OR EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind IN ('r', 'p', 'v', 'f')
                      AND c.relowner <> g.oid AND pg_catalog.has_table_privilege(g.oid, c.oid, 'TRIGGER'))
        -- TRIGGER on the tables the migrations are about to make (the history's among them), by
        -- default privileges of the role that makes them
        OR EXISTS (SELECT FROM pg_catalog.pg_default_acl da, pg_catalog.aclexplode(da.defaclacl) a
                    WHERE da.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER)
                      AND da.defaclnamespace IN (0::oid, (SELECT oid FROM ns)) AND da.defaclobjtype = 'r'
                      AND a.privilege_type = 'TRIGGER' AND a.grantee IN (0::oid, g.oid))
  )
  SELECT EXISTS (SELECT FROM ns, pg_catalog.aclexplode(ns.acl) a
                  WHERE a.grantee = 0::oid AND a.privilege_type = 'CREATE') AS public_create,
         ${loginRolesReaching(
           (g) => `${g} IN (SELECT oid FROM holders)`,
           (r) => `${r} = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER)`,
         )} AS writers,
         ARRAY(SELECT pg_catalog.quote_ident(g.rolname) FROM pg_catalog.pg_roles g
                WHERE g.oid IN (SELECT oid FROM owners)
                  AND NOT g.rolsuper AND NOT pg_catalog.pg_has_role(g.oid, 'MEMBER')
                ORDER BY 1) AS foreign_owners,
         ${foreignCodeOn((rel) => `${rel} IN (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = (SELECT oid FROM ns))`)} AS foreign_code`;

interface Trust {
  public_create: boolean;
  writers: string[];
  foreign_owners: string[];
  foreign_code: string[];
}

/**
 * Throws (`schema_untrusted`, nothing applied) when a role other than pg-maintd's could make the
 * migration files run its code: the roles are named, with the SQL a DBA runs to fix it.
 */
export async function checkSchemaTrust(
  client: pg.PoolClient,
  schema: string,
  outcome = 'Nothing was applied',
): Promise<void> {
  const t = (await client.query<Trust>(TRUST_SQL, [schema])).rows[0]!;
  const problems: string[] = [];
  const fixes: string[] = [];
  if (t.writers.length) {
    problems.push(
      `${t.writers.join(', ')} can create, replace or trigger objects in the schema ${schema}${t.public_create ? ' (CREATE is granted to PUBLIC there)' : ''}`,
    );
    fixes.push(
      `REVOKE CREATE ON SCHEMA ${schema} FROM ${t.public_create ? 'PUBLIC' : '<those roles>'}; REVOKE TRIGGER ON ALL TABLES IN SCHEMA ${schema} FROM <those roles>; give what they own in ${schema} to the role that migrates (ALTER ... OWNER TO) or take them out of the roles that own it`,
    );
  }
  if (t.foreign_owners.length) {
    problems.push(
      `${t.foreign_owners.join(', ')} own${t.foreign_owners.length === 1 ? 's' : ''} objects in ${schema}, and pg-maintd's role is not a member`,
    );
    fixes.push(
      `REASSIGN OWNED BY ${t.foreign_owners.join(', ')} TO <the role that migrates> (in this database), or drop what is not the application's`,
    );
  }
  if (t.foreign_code.length) {
    problems.push(`what is there already runs code of other roles: ${t.foreign_code.join(', ')}`);
    fixes.push(
      `drop those triggers, defaults, constraints, policies or views (taking the privilege back leaves them in place), or give the code to the role that migrates (ALTER FUNCTION ... OWNER TO)`,
    );
  }
  if (problems.length === 0) return;
  throw new MigrationError(
    'schema_untrusted',
    `the migrations run in the schema ${schema}, where other roles could plant code that they would run as pg-maintd's role: ${problems.join('; ')}. ${outcome}`,
    {
      hint: `make the schema writable only by the role that migrates (PostgreSQL's secure schema usage pattern): ${fixes.join('; ')}. A role whose membership was taken back keeps it in the sessions it has open: end them (pg_terminate_backend)`,
      exitCode: EXIT.DATAERR,
    },
  );
}

/**
 * Throws (`schema_untrusted`) when a schema the files read from exists but belongs to a role that
 * is neither a superuser nor one pg-maintd's role is a member of.
 */
export async function checkReadSchemaOwner(client: pg.PoolClient, schema: string): Promise<void> {
  const r = await client.query<{ owner: string; ok: boolean }>(
    `SELECT pg_catalog.quote_ident(o.rolname) AS owner, o.rolsuper OR pg_catalog.pg_has_role(o.oid, 'MEMBER') AS ok
       FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
      WHERE n.nspname = $1`,
    [schema],
  );
  const found = r.rows[0];
  if (!found || found.ok) return;
  throw new MigrationError(
    'schema_untrusted',
    `the migrations call functions of the schema ${schema} when it exists, and it belongs to ${found.owner}, a role that is neither a superuser nor pg-maintd's: nothing was applied`,
    {
      hint: `if ${schema} is not your platform's, drop it (DROP SCHEMA ${schema} CASCADE, after a look at what is in it); if it is, ALTER SCHEMA ${schema} OWNER TO <a superuser or the role that migrates>`,
      exitCode: EXIT.DATAERR,
    },
  );
}
