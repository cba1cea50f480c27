/**
 * The tables that need VACUUM (ANALYZE) or ANALYZE, from pg_stat_user_tables: by the share of dead
 * rows (with a floor on their number), and by time since the last (auto)vacuum or (auto)analyze.
 */
import { formatDuration } from '../core/units.js';
import { age, pct, type TablePlan, type Thresholds } from './plan.js';
import { canVacuum, userSchema } from './privilege.js';
import type { MaintenanceSession } from './session.js';

// $1 min dead rows, $2 dead ratio, $3 vacuum stale after (ms, 0 = off), $4 analyze stale after (ms, 0 = off)
function tablesSql(serverVersion: number): string {
  return `
WITH s AS (
  SELECT t.schemaname, t.relname, t.n_live_tup, t.n_dead_tup, t.n_mod_since_analyze,
         greatest(t.last_vacuum, t.last_autovacuum) AS last_vacuum,
         greatest(t.last_analyze, t.last_autoanalyze) AS last_analyze,
         t.n_dead_tup::float8 / nullif(t.n_live_tup + t.n_dead_tup, 0) AS dead_ratio,
         ${canVacuum(serverVersion, 'c')} AS permitted
    FROM pg_stat_user_tables t
    JOIN pg_class c ON c.oid = t.relid
   WHERE c.relpersistence <> 't' AND ${userSchema('t.schemaname')}
), r AS (
  SELECT s.*,
         s.n_dead_tup >= $1::bigint AND coalesce(s.dead_ratio, 0) >= $2::float8 AS dead,
         $3::float8 > 0 AND s.n_dead_tup > 0
           AND (s.last_vacuum IS NULL OR s.last_vacuum < now() - $3::float8 * interval '1 millisecond') AS vacuum_stale,
         $4::float8 > 0 AND s.n_mod_since_analyze > 0
           AND (s.last_analyze IS NULL OR s.last_analyze < now() - $4::float8 * interval '1 millisecond') AS analyze_stale
    FROM s
)
SELECT schemaname AS schema, relname AS name, n_live_tup, n_dead_tup, n_mod_since_analyze,
       coalesce(dead_ratio, 0) AS dead_ratio, permitted, dead, vacuum_stale, analyze_stale,
       extract(epoch FROM now() - last_vacuum)::float8 AS vacuum_age_s,
       extract(epoch FROM now() - last_analyze)::float8 AS analyze_age_s
  FROM r
 WHERE dead OR vacuum_stale OR analyze_stale
 ORDER BY n_dead_tup DESC, schemaname, relname`;
}

interface TableRow {
  schema: string;
  name: string;
  n_live_tup: string;
  n_dead_tup: string;
  n_mod_since_analyze: string;
  dead_ratio: number;
  permitted: boolean;
  dead: boolean;
  vacuum_stale: boolean;
  analyze_stale: boolean;
  vacuum_age_s: number | null;
  analyze_age_s: number | null;
}

export async function planTables(session: MaintenanceSession, t: Thresholds): Promise<TablePlan> {
  const rows = await session.query<TableRow>(tablesSql(session.serverVersion), [
    t.vacuumMinDeadTuples,
    t.vacuumDeadRatio,
    t.vacuumStaleAfterMs,
    t.analyzeStaleAfterMs,
  ]);
  const plan: TablePlan = { tables: [], skipped: [] };
  for (const r of rows) {
    const dead = Number(r.n_dead_tup);
    const live = Number(r.n_live_tup);
    const reasons: string[] = [];
    if (r.dead)
      reasons.push(
        `dead rows ${dead} of ${dead + live} (${pct(r.dead_ratio)}) >= ${pct(t.vacuumDeadRatio)} and >= ${t.vacuumMinDeadTuples}`,
      );
    if (r.vacuum_stale)
      reasons.push(
        `${dead} dead rows, last vacuum ${age(r.vacuum_age_s)} (> ${formatDuration(t.vacuumStaleAfterMs)})`,
      );
    if (r.analyze_stale)
      reasons.push(
        `${r.n_mod_since_analyze} rows changed since the last analyze ${age(r.analyze_age_s)} (> ${formatDuration(t.analyzeStaleAfterMs)})`,
      );
    const why = reasons.join('; ');
    if (!r.permitted) {
      plan.skipped.push({
        kind: 'table',
        schema: r.schema,
        name: r.name,
        why: `not permitted (needs the table's owner or MAINTAIN): ${why}`,
      });
      continue;
    }
    plan.tables.push({
      kind: 'table',
      schema: r.schema,
      name: r.name,
      action: r.dead || r.vacuum_stale ? 'vacuum_analyze' : 'analyze',
      why,
      deadTuples: dead,
      liveTuples: live,
    });
  }
  return plan;
}
