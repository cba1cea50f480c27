/**
 * SQL for "which login roles can reach this": a role reaches a privilege it holds itself, one it
 * inherits, and one it can take with SET ROLE. has_table_privilege(role, ...) and its kin see only
 * the first two, so a NOINHERIT member of pg_write_all_data (or of a group holding the grant) looks
 * harmless until it runs SET ROLE. Membership (pg_has_role ... 'MEMBER') covers all three.
 * Superusers are left out: they can do anything anyway, and nothing here could stop them; so are
 * roles that may not connect to this database (what PUBLIC holds reaches them too, uselessly).
 */

/**
 * An ARRAY of the quoted names of the login roles that may connect to the current database,
 * superusers and `exclude` left out, that are
 * members of (or are) a role for which `holds` is true. `holds` is a SQL predicate on the role's
 * oid, given as the column reference it should use; `exclude` one on the login role's oid.
 */
export function loginRolesReaching(
  holds: (role: string) => string,
  exclude: (role: string) => string = () => 'false',
): string {
  return `ARRAY(SELECT pg_catalog.quote_ident(r.rolname) FROM pg_catalog.pg_roles r
                 WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT (${exclude('r.oid')})
                   AND pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'CONNECT')
                   AND EXISTS (SELECT FROM pg_catalog.pg_roles g
                                WHERE pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER') AND (${holds('g.oid')}))
                 ORDER BY 1)`;
}
