/**
 * Btree bloat: how much of an index REINDEX would give back.
 *
 * The estimate follows the statistics-based method of ioguix/pgsql-bloat-estimation (btree): from
 * pg_class.reltuples and each column's average width and null fraction in pg_stats, it computes the
 * leaf pages the rows would fill at the index's fillfactor (what a fresh build yields) and compares
 * that with pg_class.relpages. It reads catalogs only (no lock on the index, no I/O), so it is cheap
 * on any database, but it is an estimate:
 * - it needs statistics for every index column (ANALYZE; expression columns are analyzed under the
 *   index's name), and columns of type `name` are not supported: such indexes are left out;
 * - it ignores btree deduplication (PostgreSQL 13+), which makes an index smaller than estimated,
 *   so it errs towards less bloat, not more;
 * - internal pages and per-column padding are ignored (a few percent).
 *
 * When the pgstattuple extension is installed in the database and the role may run pgstatindex
 * (pg_stat_scan_tables), each candidate is measured before it is rebuilt: pgstatindex reads the
 * whole index, so only indexes the estimate flags are measured.
 */
import { escapeIdentifier } from 'pg';
import { canReindex, userSchema } from './privilege.js';
import type { MaintenanceSession } from './session.js';

export interface BloatEstimate {
  oid: number;
  schema: string;
  table: string;
  name: string;
  sizeBytes: number;
  fillfactor: number;
  /** Share of the index's pages beyond what its rows need at its fillfactor, 0..1. */
  ratio: number;
  permitted: boolean;
}

/** $1: smallest size (bytes), $2: smallest ratio, $3: one index (qualified name), or null for all. */
function estimateSql(serverVersion: number): string {
  return `
WITH idx AS (
  SELECT i.indexrelid, i.indrelid, i.indnatts, i.indkey, n.nspname, ct.relname AS tblname, ci.relname AS idxname,
         ci.reltuples::float8 AS reltuples, ci.relpages::float8 AS relpages,
         current_setting('block_size')::float8 AS bs,
         -- MAXALIGN: 8 on 64-bit builds
         CASE WHEN version() ~ 'mingw32|64-bit|x86_64|ppc64|ia64|amd64|aarch64' THEN 8 ELSE 4 END AS maxalign,
         coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                     FROM unnest(ci.reloptions) AS o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor,
         ${canReindex(serverVersion, 'ct')} AS permitted
    FROM pg_index i
    JOIN pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = ci.relnamespace
   WHERE ci.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
     AND ci.relkind = 'i' AND i.indisvalid AND i.indisready AND NOT i.indisexclusion
     AND ci.reltuples >= 0 AND ci.relpages > 0
     AND ci.relpages::float8 * current_setting('block_size')::float8 >= $1::float8
     AND ($3::text IS NULL OR i.indexrelid = to_regclass($3::text))
     AND ${userSchema('n.nspname')}
), cols AS (
  -- a table column has its statistics under the table's name; an expression under the index's
  SELECT idx.indexrelid, idx.nspname,
         CASE WHEN idx.indkey[k.pos - 1] <> 0 THEN idx.tblname ELSE idx.idxname END AS statrel,
         coalesce(a_t.attname, a_i.attname) AS attname,
         coalesce(a_t.atttypid, a_i.atttypid) AS atttypid
    FROM idx
   CROSS JOIN generate_series(1, idx.indnatts) AS k(pos)
    LEFT JOIN pg_attribute a_t
      ON idx.indkey[k.pos - 1] <> 0 AND a_t.attrelid = idx.indrelid AND a_t.attnum = idx.indkey[k.pos - 1]
    LEFT JOIN pg_attribute a_i
      ON idx.indkey[k.pos - 1] = 0 AND a_i.attrelid = idx.indexrelid AND a_i.attnum = k.pos
), widths AS (
  SELECT c.indexrelid,
         count(*) AS ncols, count(s.attname) AS nstats,
         bool_or(c.atttypid = 'pg_catalog.name'::regtype) AS has_name,
         coalesce(max(s.null_frac), 0) > 0 AS nullable,
         sum((1 - s.null_frac) * s.avg_width) AS data_width
    FROM cols c
    LEFT JOIN pg_stats s
      ON s.schemaname = c.nspname AND s.tablename = c.statrel AND s.attname = c.attname AND NOT s.inherited
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

interface EstimateRow {
  oid: string;
  schema: string;
  table: string;
  name: string;
  size_bytes: string;
  fillfactor: number;
  permitted: boolean;
  ratio: number;
}

export async function estimateBloat(
  session: MaintenanceSession,
  opts: { minBytes: number; minRatio: number; name?: string },
): Promise<BloatEstimate[]> {
  const rows = await session.query<EstimateRow>(estimateSql(session.serverVersion), [
    opts.minBytes,
    opts.minRatio,
    opts.name ?? null,
  ]);
  return rows.map((r) => ({
    oid: Number(r.oid),
    schema: r.schema,
    table: r.table,
    name: r.name,
    sizeBytes: Number(r.size_bytes),
    fillfactor: r.fillfactor,
    ratio: Number(r.ratio),
    permitted: r.permitted,
  }));
}

/** The qualified pgstatindex function when pgstattuple is installed and the role may call it. */
export async function pgstatindexFunction(session: MaintenanceSession): Promise<string | undefined> {
  const rows = await session.query<{ schema: string }>(
    `WITH ext AS MATERIALIZED (
       SELECT n.nspname AS schema, to_regprocedure(format('%I.pgstatindex(regclass)', n.nspname)) AS fn
         FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pgstattuple')
     SELECT schema FROM ext WHERE fn IS NOT NULL AND has_function_privilege(fn, 'EXECUTE')`,
  );
  const schema = rows[0]?.schema;
  return schema === undefined ? undefined : `${escapeIdentifier(schema)}.pgstatindex`;
}

/**
 * Bloat measured by pgstatindex: the share of the index's pages beyond the metapage, the internal
 * pages and the leaf pages its entries would fill at `fillfactor`. Reads the whole index.
 */
export async function measureBloat(
  session: MaintenanceSession,
  fn: string,
  oid: number,
  fillfactor: number,
): Promise<number | undefined> {
  const rows = await session.query<{
    index_size: string;
    internal_pages: string;
    leaf_pages: string;
    avg_leaf_density: number;
    bs: number;
  }>(
    `SELECT index_size, internal_pages, leaf_pages, avg_leaf_density,
            current_setting('block_size')::int AS bs
       FROM ${fn}($1::oid::regclass)`,
    [oid],
  );
  const r = rows[0];
  if (!r) return undefined;
  const total = Number(r.index_size) / r.bs;
  const leaf = Number(r.leaf_pages);
  const density = Number(r.avg_leaf_density);
  if (!(total > 0) || !Number.isFinite(density)) return undefined;
  const needed = 1 + Number(r.internal_pages) + (leaf * density) / fillfactor;
  return Math.max(0, 1 - needed / total);
}
