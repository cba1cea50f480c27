/**
 * Bloat estimates from the catalogs, as SQL: btree indexes (what REINDEX would give back) and tables
 * (what VACUUM FULL or a rewrite would). The maintenance job plans rebuilds with the btree estimate and
 * the metrics export both, so they are one query each, here, below both.
 *
 * Both follow the statistics-based method of ioguix/pgsql-bloat-estimation: from pg_class.reltuples
 * and each column's average width and null fraction in pg_stats, the pages the rows would fill at the
 * relation's fillfactor, compared with pg_class.relpages. They read catalogs only (no lock on the
 * relation, no I/O), so they are cheap on any database, but they are estimates:
 * - every column needs statistics (ANALYZE; an index's expression columns are analyzed under the
 *   index's name), and the role must be allowed to read them (pg_stats shows only the columns it may
 *   SELECT): other relations are left out, as are relations with a column of type `name`;
 * - btree deduplication (PostgreSQL 13+) makes an index smaller than estimated, so the btree estimate
 *   errs towards less bloat; internal pages and per-column padding are ignored (a few percent);
 * - toasted values count as their pointer in pg_stats' avg_width, so a table with much TOAST reads
 *   more bloated than it is.
 */
import { INDEX_PAGES, tablePages, tablePagesJoins } from './relation-size.js';

/** Schemas never estimated: the catalogs, TOAST, and other sessions' temporary schemas. */
export function userSchema(nspname: string): string {
  return `${nspname} NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND ${nspname} !~ '^pg_(toast_)?temp_'`;
}

/** MAXALIGN: 8 on 64-bit builds. */
const MAXALIGN = `CASE WHEN version() ~ 'mingw32|64-bit|x86_64|ppc64|ia64|amd64|aarch64' THEN 8 ELSE 4 END`;

const fillfactor = (rel: string, dflt: number) =>
  `coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
              FROM unnest(${rel}.reloptions) AS o WHERE o LIKE 'fillfactor=%'), ${dflt})`;

export interface EstimateScope {
  /** SQL over the table's pg_class row `ct`: the `permitted` column (true when the caller does not care). */
  permitted: string;
  /** SQL predicate over `n.nspname`: the schemas estimated. */
  schemas: string;
}

/**
 * Btree indexes: oid, schema, table, name, size_bytes, fillfactor, permitted, ratio (0..1), largest
 * first. $1: smallest size (bytes), $2: smallest ratio, $3: one index (qualified name) or null for
 * all, $4: at most this many indexes (the largest), or null for all.
 */
export function btreeBloatSql(scope: EstimateScope): string {
  return `
WITH idx AS (
  SELECT i.indexrelid, i.indrelid, i.indkey, n.nspname, ct.relname AS tblname, ci.relname AS idxname,
         ci.reltuples::float8 AS reltuples, ci.relpages::float8 AS relpages,
         current_setting('block_size')::float8 AS bs, ${MAXALIGN} AS maxalign,
         ${fillfactor('ci', 90)} AS fillfactor,
         ${scope.permitted} AS permitted
    FROM pg_index i
    JOIN pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = ci.relnamespace
   WHERE ci.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
     AND ci.relkind = 'i' AND i.indisvalid AND i.indisready AND NOT i.indisexclusion
     AND ci.reltuples >= 0 AND ci.relpages > 0
     AND ci.relpages::float8 * current_setting('block_size')::float8 >= $1::float8
     AND ($3::text IS NULL OR i.indexrelid = to_regclass($3::text))
     AND ${scope.schemas}
   ORDER BY ci.relpages DESC, i.indexrelid
   LIMIT $4::bigint
), cols AS (
  -- a table column has its statistics under the table's name; an expression under the index's.
  -- Looked up per column (LATERAL, by index; OFFSET 0 keeps the planner from turning it back into
  -- a join) rather than joined: a join reads all of pg_attribute and pg_stats, whose size grows with
  -- every column of the database, where the lookups grow only with the (bounded) rows estimated.
  SELECT idx.indexrelid, idx.nspname,
         CASE WHEN k.attnum <> 0 THEN idx.tblname ELSE idx.idxname END AS statrel,
         a.attname, a.atttypid
    FROM idx
   -- unnest, not generate_series: the planner expects 10 rows of it, not 1000, and a cost that high
   -- turns JIT compilation on (seconds, for a query of milliseconds)
   CROSS JOIN LATERAL unnest(idx.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)
    LEFT JOIN LATERAL (
      SELECT attname, atttypid FROM pg_attribute
       WHERE attrelid = CASE WHEN k.attnum <> 0 THEN idx.indrelid ELSE idx.indexrelid END
         AND attnum = CASE WHEN k.attnum <> 0 THEN k.attnum ELSE k.pos END
      OFFSET 0) a ON true
), widths AS (
  SELECT c.indexrelid,
         count(*) AS ncols, count(s.attname) AS nstats,
         bool_or(c.atttypid = 'pg_catalog.name'::regtype) AS has_name,
         coalesce(max(s.null_frac), 0) > 0 AS nullable,
         sum((1 - s.null_frac) * s.avg_width) AS data_width
    FROM cols c
    LEFT JOIN LATERAL (
      SELECT s.attname, s.null_frac, s.avg_width FROM pg_stats s
       WHERE s.schemaname = c.nspname AND s.tablename = c.statrel AND s.attname = c.attname AND NOT s.inherited
      OFFSET 0) s
      ON true
   GROUP BY c.indexrelid
), est AS (
  SELECT idx.*, w.ncols, w.nstats, w.has_name,
         -- line pointer (4) + MAXALIGN(IndexTupleData (8), null bitmap (4) when a column has nulls, data)
         4 + ceil(((CASE WHEN w.nullable THEN 12 ELSE 8 END) + w.data_width) / idx.maxalign) * idx.maxalign
           AS tuple_bytes
    FROM idx JOIN widths w ON w.indexrelid = idx.indexrelid
), rated AS (
  SELECT est.*,
         -- metapage + leaf pages at fillfactor (page header 24, btree special space 16)
         greatest(0, 1 - (1 + ceil(reltuples / greatest(1, floor((bs - 24 - 16) * fillfactor / 100 / tuple_bytes))))
                         / relpages) AS ratio
    FROM est
   WHERE nstats = ncols AND NOT has_name
)
SELECT indexrelid::bigint AS oid, nspname AS schema, tblname AS "table", idxname AS name,
       (relpages * bs)::bigint AS size_bytes, fillfactor, permitted, ratio
  FROM rated
 WHERE ratio >= $2::float8
 ORDER BY relpages DESC`;
}

/**
 * Tables (and materialized views) with their TOAST: oid, schema, name, size_bytes (heap and TOAST
 * pages), fillfactor, ratio (0..1), largest first. $1: at most this many tables (the largest by
 * relation-size.ts's estimate, indexes included: the same order as the metrics' table statistics).
 */
export function tableBloatSql(scope: Pick<EstimateScope, 'schemas'>): string {
  return `
WITH ${INDEX_PAGES}, tbl AS (
  SELECT ct.oid, n.nspname, ct.relname, ct.reltuples::float8 AS reltuples,
         (ct.relpages + coalesce(ct_toast.relpages, 0))::float8 AS relpages,
         coalesce(ct_toast.reltuples, 0)::float8 AS toasttuples,
         current_setting('block_size')::float8 AS bs, ${MAXALIGN} AS maxalign,
         ${fillfactor('ct', 100)} AS fillfactor
    FROM pg_class ct
    JOIN pg_namespace n ON n.oid = ct.relnamespace
    ${tablePagesJoins('ct')}
   WHERE ct.relkind IN ('r', 'm') AND ct.relpersistence <> 't' AND ct.reltuples >= 0 AND ct.relpages > 0
     AND ${scope.schemas}
   -- the largest as the table statistics rank them (indexes included), so the two cover the same tables
   ORDER BY ${tablePages('ct')} DESC, ct.oid
   LIMIT $1::bigint
), widths AS (
  SELECT tbl.oid, count(*) AS ncols, count(s.attname) AS nstats,
         bool_or(a.atttypid = 'pg_catalog.name'::regtype) AS has_name,
         coalesce(max(s.null_frac), 0) > 0 AS nullable,
         coalesce(sum((1 - s.null_frac) * s.avg_width), 0) AS data_width
    FROM tbl
    JOIN pg_attribute a ON a.attrelid = tbl.oid AND a.attnum > 0 AND NOT a.attisdropped
    -- per column, by index (see the btree estimate's cols)
    LEFT JOIN LATERAL (
      SELECT s.attname, s.null_frac, s.avg_width FROM pg_stats s
       WHERE s.schemaname = tbl.nspname AND s.tablename = tbl.relname AND s.attname = a.attname AND NOT s.inherited
      OFFSET 0) s
      ON true
   GROUP BY tbl.oid
), est AS (
  SELECT tbl.*, w.ncols, w.nstats, w.has_name,
         -- line pointer (4) + MAXALIGN(heap tuple header (23) + null bitmap) + MAXALIGN(data)
         4 + ceil((23 + CASE WHEN w.nullable THEN ceil(w.ncols / 8.0) ELSE 0 END) / tbl.maxalign) * tbl.maxalign
           + ceil(w.data_width / tbl.maxalign) * tbl.maxalign AS tuple_bytes
    FROM tbl JOIN widths w ON w.oid = tbl.oid
), rated AS (
  SELECT est.*,
         -- heap pages at fillfactor (page header 24), plus TOAST chunks at 4 a page
         greatest(0, 1 - (ceil(reltuples / greatest(1, floor((bs - 24) * fillfactor / 100 / tuple_bytes)))
                          + ceil(toasttuples / 4)) / relpages) AS ratio
    FROM est
   WHERE nstats = ncols AND NOT has_name
)
SELECT oid::bigint AS oid, nspname AS schema, relname AS name, (relpages * bs)::bigint AS size_bytes,
       fillfactor, ratio
  FROM rated
 ORDER BY relpages DESC`;
}
