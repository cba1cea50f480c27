/**
 * The vacuum step: VACUUM (ANALYZE), or ANALYZE alone, on each table the plan picked, one statement
 * at a time on the maintenance session.
 */
import { statementFor, type TablePlan, type PlannedTable } from './plan.js';
import { logOutcome, runStatement, type ItemReport, type StepContext } from './step.js';

export async function vacuumTables(
  ctx: StepContext,
  plan: TablePlan,
): Promise<Array<ItemReport<PlannedTable>>> {
  const reports: Array<ItemReport<PlannedTable>> = [];
  for (const item of plan.tables) {
    ctx.signal.throwIfAborted();
    const statement = statementFor(item);
    const outcome = await runStatement(ctx, statement);
    reports.push({ item, outcome });
    logOutcome(ctx.log, { table: `${item.schema}.${item.name}`, why: item.why }, statement, outcome);
    const database = ctx.database;
    if (outcome.status === 'done')
      (item.action === 'vacuum_analyze' ? ctx.metrics?.tablesVacuumed : ctx.metrics?.tablesAnalyzed)?.inc({
        database,
      });
    if (outcome.status === 'lock_timeout') ctx.metrics?.lockTimeouts.inc({ job: 'vacuum', database });
  }
  return reports;
}
