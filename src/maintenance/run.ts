/**
 * One maintenance run on one database: open the maintenance session, then for each step (vacuum,
 * then reindex) plan from the current statistics and carry the plan out. The index plan is made
 * after the vacuum step, whose ANALYZE refreshes the statistics the bloat estimate reads.
 * A dry run plans both steps and changes nothing.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/load.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import { MAINTENANCE_STEPS, type MaintenanceMetrics, type MaintenanceStep } from './metrics.js';
import { planIndexes } from './index-plan.js';
import { planTables } from './table-plan.js';
import { reindexIndexes } from './reindex.js';
import { MaintenanceSession } from './session.js';
import { resultOf, round, type StepContext, type StepReport } from './step.js';
import { vacuumTables } from './vacuum.js';

export interface MaintenanceDeps {
  config: Config;
  logger: Logger;
  /** Observes the runs: the daemon attaches its metrics; a one-shot command has none. */
  metrics?: MaintenanceMetrics;
}

export interface RunOptions {
  signal: AbortSignal;
  runId?: string;
  /** Both steps unless given. */
  steps?: readonly MaintenanceStep[];
  /** Plan only: change nothing, record no metrics. */
  dryRun?: boolean;
}

export interface MaintenanceReport {
  database: string;
  runId: string;
  dryRun: boolean;
  steps: StepReport[];
}

export async function runMaintenance(
  deps: MaintenanceDeps,
  database: string,
  opts: RunOptions,
): Promise<MaintenanceReport> {
  const { config, logger, metrics } = deps;
  const runId = opts.runId ?? randomBytes(4).toString('hex');
  const steps = MAINTENANCE_STEPS.filter((s) => !opts.steps || opts.steps.includes(s));
  const dryRun = opts.dryRun === true;
  const report: MaintenanceReport = { database, runId, dryRun, steps: [] };
  const started = performance.now();
  let session: MaintenanceSession;
  try {
    session = await MaintenanceSession.open(config.db, database, config.maintenance, logger);
  } catch (err) {
    if (!dryRun) for (const job of steps) metrics?.recordRun(job, database, 'failure', elapsed(started));
    throw err; // the caller reports it (the job's log, the CLI's message)
  }
  try {
    for (const job of steps) {
      const log = logger.child({ job, database, runId });
      const ctx: StepContext = {
        database,
        session,
        signal: opts.signal,
        log,
        metrics: dryRun ? undefined : metrics,
      };
      const step = await runStep(ctx, job, config.maintenance, dryRun);
      report.steps.push(step);
      if (!dryRun) metrics?.recordRun(job, database, step.result!, step.seconds);
    }
  } finally {
    await session.close();
  }
  return report;
}

async function runStep(
  ctx: StepContext,
  job: MaintenanceStep,
  thresholds: Config['maintenance'],
  dryRun: boolean,
): Promise<StepReport> {
  const started = performance.now();
  const step: StepReport = { job, seconds: 0, items: [], skipped: [] };
  let ended: 'aborted' | 'failed' | undefined;
  try {
    ctx.signal.throwIfAborted();
    if (job === 'vacuum') {
      const plan = await planTables(ctx.session, thresholds);
      step.skipped = plan.skipped;
      logPlan(ctx.log, plan.tables.length, plan.skipped, dryRun);
      if (dryRun) step.items = plan.tables.map((item) => ({ item }));
      else step.items = await vacuumTables(ctx, plan);
    } else {
      const plan = await planIndexes(ctx.session, thresholds);
      step.skipped = plan.skipped;
      logPlan(ctx.log, plan.indexes.length, plan.skipped, dryRun);
      if (dryRun) step.items = plan.indexes.map((item) => ({ item }));
      else step.items = await reindexIndexes(ctx, plan, thresholds);
    }
  } catch (err) {
    ended = ctx.signal.aborted ? 'aborted' : 'failed';
    step.error = errorMessage(ended === 'aborted' ? ctx.signal.reason : err);
    if (ended === 'aborted') ctx.log.warn({ reason: step.error }, `${job} aborted`);
    else ctx.log.error({ err: { message: step.error } }, `${job} could not go on`);
  }
  step.seconds = elapsed(started);
  if (dryRun) return step;
  step.result = resultOf(step.items, ended);
  const count = (s: string) => step.items.filter((i) => i.outcome?.status === s).length;
  ctx.log[step.result === 'success' ? 'info' : step.result === 'failure' ? 'error' : 'warn'](
    {
      result: step.result,
      seconds: round(step.seconds),
      done: count('done'),
      lockTimeouts: count('lock_timeout'),
      failed: count('failed'),
      notPermitted: step.skipped.length,
    },
    `${job} finished`,
  );
  return step;
}

function logPlan(log: Logger, planned: number, skipped: StepReport['skipped'], dryRun: boolean): void {
  log.info({ planned, dryRun }, planned ? `${planned} to do` : 'nothing to do');
  if (skipped.length)
    log.warn(
      { skipped: skipped.slice(0, 20).map((s) => `${s.schema}.${s.name}: ${s.why}`), count: skipped.length },
      'left alone',
    );
}

function elapsed(started: number): number {
  return (performance.now() - started) / 1000;
}
