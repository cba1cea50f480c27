/**
 * The reindex step: drop the invalid leftovers of failed REINDEX CONCURRENTLY runs, then rebuild
 * invalid and bloated indexes with REINDEX INDEX CONCURRENTLY (never REINDEX DATABASE, which locks
 * out writes). A rebuild that fails can itself leave an invalid `<name>_ccnew`; those are dropped
 * at the end of the step, or by the next run's plan if the drop cannot get its lock now.
 */
import { estimateBloat } from './index-bloat.js';
import { planIndexes } from './index-plan.js';
import { qualified, statementFor, type IndexPlan, type PlannedIndex, type Thresholds } from './plan.js';
import { logOutcome, runStatement, type ItemReport, type StepContext } from './step.js';

export async function reindexIndexes(
  ctx: StepContext,
  plan: IndexPlan,
  thresholds: Thresholds,
): Promise<Array<ItemReport<PlannedIndex>>> {
  const reports: Array<ItemReport<PlannedIndex>> = [];
  let rebuildFailed = false;
  for (const item of plan.indexes) {
    ctx.signal.throwIfAborted();
    const report = await runOne(ctx, item, thresholds);
    reports.push(report);
    if (item.action !== 'drop_leftover' && report.outcome?.status !== 'done') rebuildFailed = true;
  }
  if (rebuildFailed) {
    ctx.signal.throwIfAborted();
    const again = await planIndexes(ctx.session, { ...thresholds, reindexBloatRatio: 1 });
    for (const item of again.indexes.filter((i) => i.action === 'drop_leftover')) {
      ctx.signal.throwIfAborted();
      reports.push(await runOne(ctx, item, thresholds));
    }
  }
  return reports;
}

async function runOne(
  ctx: StepContext,
  item: PlannedIndex,
  t: Thresholds,
): Promise<ItemReport<PlannedIndex>> {
  const statement = statementFor(item);
  const outcome = await runStatement(ctx, statement);
  const report: ItemReport<PlannedIndex> = { item, outcome };
  const target = {
    index: `${item.schema}.${item.name}`,
    table: `${item.schema}.${item.table}`,
    why: item.why,
  };
  logOutcome(ctx.log, target, statement, outcome);
  const database = ctx.database;
  if (outcome.status === 'lock_timeout') ctx.metrics?.lockTimeouts.inc({ job: 'reindex', database });
  if (outcome.status !== 'done') return report;
  if (item.action === 'drop_leftover') {
    ctx.metrics?.leftoversDropped.inc({ database });
    return report;
  }
  ctx.metrics?.indexesRebuilt.inc({
    database,
    reason: item.action === 'reindex_invalid' ? 'invalid' : 'bloat',
  });
  if (item.action === 'reindex_bloat') {
    const [after] = await estimateBloat(ctx.session, {
      minBytes: 0,
      minRatio: 0,
      name: qualified(item.schema, item.name),
    });
    report.bloatAfter = after?.ratio;
    if (after && after.ratio >= t.reindexBloatRatio && item.measuredBloat === undefined)
      ctx.log.warn(
        { ...target, bloatAfter: after.ratio },
        'the bloat estimate stays above MAINTENANCE_REINDEX_BLOAT_RATIO right after the rebuild: the statistics mislead it for this index (install pgstattuple so candidates are measured)',
      );
  }
  return report;
}
