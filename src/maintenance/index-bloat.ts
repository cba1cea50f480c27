/**
 * Btree bloat: how much of an index REINDEX would give back.
 *
 * The estimate (src/db/bloat-estimate.ts, shared with the bloat metrics) reads catalogs only: from
 * reltuples and pg_stats it computes the leaf pages a fresh build would fill at the index's fillfactor
 * and compares them with relpages. It errs towards less bloat (btree deduplication is ignored) and
 * leaves out indexes without statistics for every column.
 *
 * When the pgstattuple extension is installed in the database and the role may run pgstatindex
 * (pg_stat_scan_tables), each candidate is measured before it is rebuilt: pgstatindex reads the
 * whole index, so only indexes the estimate flags are measured.
 */
import { escapeIdentifier } from 'pg';
import { btreeBloatSql } from '../db/bloat-estimate.js';
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
  const sql = btreeBloatSql({
    permitted: canReindex(session.serverVersion, 'ct'),
    schemas: userSchema('n.nspname'),
  });
  const rows = await session.query<EstimateRow>(sql, [opts.minBytes, opts.minRatio, opts.name ?? null, null]);
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
