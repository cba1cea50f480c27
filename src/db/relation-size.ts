/**
 * A table's size as the planner estimates it, from the catalog alone: pg_class.relpages of the table,
 * its TOAST table and every index of either. No relation is opened and no file stat()ed, so ranking
 * every table of a database by it costs a catalog scan, where pg_total_relation_size() would open
 * each table, TOAST table and index (seconds on tens of thousands of tables). VACUUM, ANALYZE
 * (autovacuum runs both) and CREATE INDEX keep relpages current; between them it lags, and a table
 * never vacuumed or analyzed (bulk-loaded with autovacuum off, or before its first run) counts as 0.
 * The metrics' "largest tables" and the table bloat estimate rank by it, so they agree.
 */

/** A CTE, `index_pages` (indrelid, pages): the pages of each relation's indexes. */
export const INDEX_PAGES = `index_pages AS (
    SELECT i.indrelid, sum(ic.relpages) AS pages
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
     GROUP BY i.indrelid)`;

/** LEFT JOINs (needing INDEX_PAGES) of the table whose pg_class row is `c`: its TOAST table and the indexes of both. */
export function tablePagesJoins(c: string): string {
  return `LEFT JOIN pg_class ${c}_toast ON ${c}_toast.oid = ${c}.reltoastrelid
    LEFT JOIN index_pages ${c}_idx ON ${c}_idx.indrelid = ${c}.oid
    LEFT JOIN index_pages ${c}_tidx ON ${c}_tidx.indrelid = ${c}.reltoastrelid`;
}

/** The estimated pages (bigint) of the table `c`, given tablePagesJoins(c). */
export function tablePages(c: string): string {
  return `(${c}.relpages::bigint + coalesce(${c}_toast.relpages, 0) + coalesce(${c}_idx.pages, 0) + coalesce(${c}_tidx.pages, 0))`;
}
