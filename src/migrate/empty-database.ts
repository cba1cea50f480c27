/**
 * Whether a database is empty enough for the start-up migrations to build the application schema
 * in it unasked: no table, view, sequence, foreign table, function, type, operator, collation, text
 * search configuration or dictionary of anyone's in a schema
 * other than the system's and pg-maintd's own (`pgmaintd`, and the migration history itself), and no
 * large object.
 * What an extension created is part of the extension, not the operator's data, and does not count;
 * nor do a managed platform's own schemas that every new database there has (Supabase's `auth`,
 * `storage` and the like, owned by its superuser `supabase_admin`).
 */
import type pg from 'pg';

export interface UserObjects {
  count: number;
  /** A few of them, as `kind schema.name`, to say what was found. */
  examples: string[];
}

// a relation's row type and an array or multirange type come with the relation or type they belong
// to; extension members are marked in pg_depend (deptype 'e')
const USER_OBJECTS_SQL = `
  WITH o AS (
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid, c.relnamespace AS ns, c.relname AS name,
           c.relowner AS owner,
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
                          WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                          WHEN 'f' THEN 'foreign table' ELSE 'type' END AS kind
      FROM pg_catalog.pg_class c
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
    UNION ALL
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, p.pronamespace, p.proname, p.proowner, 'function'
      FROM pg_catalog.pg_proc p
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, t.typnamespace, t.typname, t.typowner, 'type'
      FROM pg_catalog.pg_type t
     WHERE t.typrelid = 0
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid)
    UNION ALL
    SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass, op.oid, op.oprnamespace, op.oprname, op.oprowner,
           'operator'
      FROM pg_catalog.pg_operator op
    UNION ALL
    SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass, co.oid, co.collnamespace, co.collname, co.collowner,
           'collation'
      FROM pg_catalog.pg_collation co
    UNION ALL
    SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass, tc.oid, tc.cfgnamespace, tc.cfgname, tc.cfgowner,
           'text search configuration'
      FROM pg_catalog.pg_ts_config tc
    UNION ALL
    SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, td.oid, td.dictnamespace, td.dictname, td.dictowner,
           'text search dictionary'
      FROM pg_catalog.pg_ts_dict td
  )
  SELECT o.kind || ' ' || pg_catalog.format('%I.%I', n.nspname, o.name) AS what,
         pg_catalog.count(*) OVER () AS total
    FROM o JOIN pg_catalog.pg_namespace n ON n.oid = o.ns
   WHERE n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', $1)
     AND NOT (n.nspname = $2 AND o.name = $3)
     -- Supabase's platform (the schemas auth, storage, realtime, vault..., and the functions it puts
     -- in extensions and pgbouncer) comes with every project and belongs to its superuser
     -- supabase_admin; what a user makes there belongs to postgres
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                      WHERE r.rolname = 'supabase_admin' AND r.rolsuper
                        AND (r.oid = o.owner OR (n.nspname <> 'public' AND r.oid = n.nspowner)))
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e')
   ORDER BY n.nspname, o.kind, o.name
   LIMIT 5`;

/**
 * The objects that make a database not empty. `ownSchema` is pg-maintd's (its leases);
 * `history` the migration history table, which a failed first run may have left behind.
 */
export async function userObjects(
  client: pg.PoolClient,
  ownSchema: string,
  history: { schema: string; table: string },
): Promise<UserObjects> {
  const r = await client.query<{ what: string; total: string }>(USER_OBJECTS_SQL, [
    ownSchema,
    history.schema,
    history.table,
  ]);
  // large objects belong to no schema, and are data all the same
  const lo = await client.query<{ n: string }>(
    'SELECT pg_catalog.count(*) AS n FROM pg_catalog.pg_largeobject_metadata',
  );
  const largeObjects = Number(lo.rows[0]?.n ?? 0);
  const examples = r.rows.map((x) => x.what);
  if (largeObjects > 0 && examples.length < 5) examples.push(`${largeObjects} large object(s)`);
  return { count: Number(r.rows[0]?.total ?? 0) + largeObjects, examples };
}
