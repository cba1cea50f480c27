/**
 * The indexes to drop or rebuild: invalid leftovers of failed REINDEX CONCURRENTLY runs (dropped),
 * other invalid indexes and bloated btree indexes (rebuilt with REINDEX INDEX CONCURRENTLY). An
 * index that a running CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY is building (it is invalid
 * until it finishes) is left alone.
 */
import { errorMessage } from '../core/errors.js';
import { invalidIndexesSql } from '../db/invalid-indexes.js';
import { estimateBloat, measureBloat, pgstatindexFunction } from './index-bloat.js';
import { humanBytes } from '../core/units.js';
import { pct, type IndexPlan, type PlannedIndex, type Thresholds } from './plan.js';
import { canReindex, userSchema } from './privilege.js';
import { isConnectionLoss, type MaintenanceSession } from './session.js';

interface InvalidRow {
  oid: string;
  schema: string;
  table: string;
  name: string;
  size_bytes: string;
  leftover: boolean;
  exclusion: boolean;
  permitted: boolean;
  building: string | null;
}

export async function planIndexes(session: MaintenanceSession, t: Thresholds): Promise<IndexPlan> {
  const plan: IndexPlan = { indexes: [], skipped: [] };
  const drops: PlannedIndex[] = [];
  const invalid: PlannedIndex[] = [];
  for (const r of await session.query<InvalidRow>(
    invalidIndexesSql({
      permitted: canReindex(session.serverVersion, 'ct'),
      schemas: userSchema('n.nspname'),
    }),
  )) {
    const base = { kind: 'index' as const, schema: r.schema, name: r.name };
    if (r.building) {
      plan.skipped.push({ ...base, why: `invalid, but being built right now by ${r.building}` });
    } else if (!r.permitted) {
      plan.skipped.push({ ...base, why: "invalid, but not permitted (needs the table's owner or MAINTAIN)" });
    } else if (r.exclusion && !r.leftover) {
      plan.skipped.push({
        ...base,
        why: 'invalid exclusion-constraint index: REINDEX CONCURRENTLY cannot rebuild it; rebuild it by hand',
      });
    } else {
      const item = {
        ...base,
        oid: Number(r.oid),
        table: r.table,
        sizeBytes: Number(r.size_bytes),
      };
      if (r.leftover)
        drops.push({
          ...item,
          action: 'drop_leftover',
          why: 'invalid leftover of a failed REINDEX CONCURRENTLY',
        });
      else
        invalid.push({
          ...item,
          action: 'reindex_invalid',
          why: 'invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX): queries do not use it',
        });
    }
  }
  plan.indexes.push(...drops, ...invalid);

  if (t.reindexBloatRatio < 1) {
    const estimates = await estimateBloat(session, {
      minBytes: t.reindexMinSizeBytes,
      minRatio: t.reindexBloatRatio,
    });
    const pgstatindex = estimates.length
      ? await pgstatindexFunction(session).catch((err: unknown) => {
          if (isConnectionLoss(err)) throw err;
          return undefined; // measured or not, the estimate still stands
        })
      : undefined;
    for (const e of estimates) {
      const base = { kind: 'index' as const, schema: e.schema, name: e.name };
      if (!e.permitted) {
        plan.skipped.push({
          ...base,
          why: `estimated bloat ${pct(e.ratio)}, but not permitted (needs the table's owner or MAINTAIN)`,
        });
        continue;
      }
      let why = `estimated bloat ${pct(e.ratio)} of ${humanBytes(e.sizeBytes)} >= ${pct(t.reindexBloatRatio)} (statistics)`;
      let measured: number | undefined;
      if (pgstatindex) {
        try {
          measured = await measureBloat(session, pgstatindex, e.oid, e.fillfactor);
        } catch (err) {
          if (isConnectionLoss(err)) throw err;
          why += `; pgstatindex failed: ${errorMessage(err)}`;
        }
        if (measured !== undefined && measured < t.reindexBloatRatio) {
          plan.skipped.push({
            ...base,
            why: `estimated bloat ${pct(e.ratio)}, but pgstatindex measures ${pct(measured)} < ${pct(t.reindexBloatRatio)}`,
          });
          continue;
        }
        if (measured !== undefined)
          why = `bloat ${pct(measured)} of ${humanBytes(e.sizeBytes)} >= ${pct(t.reindexBloatRatio)} (measured by pgstatindex; estimated ${pct(e.ratio)})`;
      }
      plan.indexes.push({
        ...base,
        oid: e.oid,
        table: e.table,
        action: 'reindex_bloat',
        why,
        sizeBytes: e.sizeBytes,
        estimatedBloat: e.ratio,
        measuredBloat: measured,
      });
    }
  }
  return plan;
}
