/**
 * SQL for "what on these tables runs code that someone else owns". Taking a privilege away does not
 * take away what was made with it: a trigger another role hung on a table while it held TRIGGER
 * stays after the REVOKE, and fires in every session that writes the table, pg-maintd's included.
 * So are column defaults, CHECK constraints, index expressions, policies and view rules that call
 * a function, an operator or a domain whose owner could change what it does. Such an owner is
 * trusted only when it is a superuser or a role the current one is a member of.
 */

/** The table (or view) an object hangs on, for each kind of object that can call code. */
const RELATION_OF = `
  CASE d.classid
    WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass
      THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = d.objid AND NOT t.tgisinternal)
    WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass
      THEN (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = d.objid)
    WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass
      THEN (SELECT c.conrelid FROM pg_catalog.pg_constraint c WHERE c.oid = d.objid)
    WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass
      THEN (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = d.objid)
    WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      THEN (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid)
    WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN d.objid
  END`;

/** The owner of the code an object calls: a function, an operator, or a domain (its CHECKs). */
const CODE_OWNER = `
  CASE d.refclassid
    WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass
      THEN (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = d.refobjid)
    WHEN 'pg_catalog.pg_operator'::pg_catalog.regclass
      THEN (SELECT o.oprowner FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
    WHEN 'pg_catalog.pg_type'::pg_catalog.regclass
      THEN (SELECT t.typowner FROM pg_catalog.pg_type t WHERE t.oid = d.refobjid AND t.typtype = 'd')
  END`;

/**
 * An ARRAY of descriptions ("trigger tr on public.t calls e.f() of evil") of the objects on the
 * relations for which `onRelation` (a SQL predicate on a pg_class oid) holds that call code owned by
 * a role that is neither a superuser nor one the current role is a member of.
 */
export function foreignCodeOn(onRelation: (rel: string) => string): string {
  return `ARRAY(
    SELECT DISTINCT (pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid)).type || ' '
                    || (pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid)).identity
                    || ' calls ' || pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)
                    || ' of ' || pg_catalog.quote_ident(o.rolname)
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_roles o ON o.oid = ${CODE_OWNER}
     WHERE d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass,
                            'pg_catalog.pg_type'::pg_catalog.regclass)
       AND d.deptype IN ('n', 'a')
       AND NOT o.rolsuper AND NOT pg_catalog.pg_has_role(o.oid, 'MEMBER')
       AND (${onRelation(`(${RELATION_OF})`)})
     ORDER BY 1)`;
}
