/**
 * Invalid indexes, as SQL: what a failed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY leaves
 * behind (the latter names its leftovers `<index>_ccnew` and `<index>_ccold`, numbered when taken).
 * Queries do not use an invalid index, but every write still updates it. The maintenance job drops
 * or rebuilds them and the metrics export them, so they are one query, here, below both.
 *
 * Columns: oid, schema, table, name, size_bytes, leftover (a _ccnew/_ccold name), exclusion,
 * permitted, building (what is building on its table right now: a running CREATE INDEX CONCURRENTLY
 * or REINDEX CONCURRENTLY leaves its index invalid until it finishes; null when nothing is).
 */
import type { EstimateScope } from './bloat-estimate.js';

export function invalidIndexesSql(scope: EstimateScope): string {
  return `
SELECT i.indexrelid::bigint AS oid, n.nspname AS schema, ct.relname AS "table", ci.relname AS name,
       (ci.relpages::bigint * current_setting('block_size')::bigint) AS size_bytes,
       ci.relname ~ '_cc(new|old)[0-9]*$' AS leftover,
       i.indisexclusion AS exclusion,
       ${scope.permitted} AS permitted,
       (SELECT string_agg(format('%s (pid %s)', p.command, p.pid), ', ')
          FROM pg_stat_progress_create_index p
         WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND (p.relid = i.indrelid OR p.index_relid = i.indexrelid)) AS building
  FROM pg_index i
  JOIN pg_class ci ON ci.oid = i.indexrelid
  JOIN pg_class ct ON ct.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = ci.relnamespace
 WHERE NOT i.indisvalid AND ci.relkind = 'i' AND ${scope.schemas}
 ORDER BY n.nspname, ci.relname`;
}
