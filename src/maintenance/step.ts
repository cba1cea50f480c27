/**
 * Running one planned statement and judging the outcome. A lock not granted within lock_timeout
 * (SQLSTATE 55P03) skips the item until the next run; a vanished table or index is skipped too; a
 * lost connection or an abort ends the step; anything else fails the item and the step goes on.
 */
import { classify } from '../db/sqlstate.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import type { MaintenanceMetrics, MaintenanceStep, RunResult } from './metrics.js';
import type { PlannedIndex, PlannedTable, Skipped } from './plan.js';
import { isConnectionLoss, type MaintenanceSession } from './session.js';

export type Outcome =
  | { status: 'done'; seconds: number }
  | { status: 'lock_timeout'; seconds: number }
  | { status: 'gone' }
  | { status: 'failed'; error: string; code: string | undefined };

export interface ItemReport<T> {
  item: T;
  /** Undefined in a dry run. */
  outcome?: Outcome;
  /** Reindex for bloat: the estimate right after the rebuild. */
  bloatAfter?: number;
}

export interface StepReport<T = PlannedTable | PlannedIndex> {
  job: MaintenanceStep;
  /** Undefined in a dry run. */
  result?: RunResult;
  seconds: number;
  items: Array<ItemReport<T>>;
  skipped: Skipped[];
  /** What ended the step early, when something did. */
  error?: string;
}

export interface StepContext {
  database: string;
  session: MaintenanceSession;
  signal: AbortSignal;
  log: Logger;
  metrics?: MaintenanceMetrics;
}

const UNDEFINED_TABLE = '42P01';

export async function runStatement(ctx: StepContext, statement: string): Promise<Outcome> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  try {
    await ctx.session.run(statement, ctx.signal);
    return { status: 'done', seconds: seconds() };
  } catch (err) {
    if (ctx.signal.aborted) throw err;
    const { kind, code } = classify(err);
    if (kind === 'lock_timeout') return { status: 'lock_timeout', seconds: seconds() };
    if (code === UNDEFINED_TABLE) return { status: 'gone' };
    if (isConnectionLoss(err)) throw err;
    return { status: 'failed', error: errorMessage(err), code };
  }
}

export function resultOf(items: Array<ItemReport<unknown>>, ended?: 'aborted' | 'failed'): RunResult {
  if (ended === 'aborted') return 'aborted';
  if (ended === 'failed' || items.some((i) => i.outcome?.status === 'failed')) return 'failure';
  if (items.some((i) => i.outcome?.status === 'lock_timeout')) return 'partial';
  return 'success';
}

/** Logs an item's outcome the same way for every step. */
export function logOutcome(
  log: Logger,
  target: Record<string, unknown>,
  statement: string,
  o: Outcome,
): void {
  switch (o.status) {
    case 'done':
      log.info({ ...target, statement, seconds: round(o.seconds) }, 'done');
      return;
    case 'lock_timeout':
      log.warn(
        { ...target, statement, seconds: round(o.seconds) },
        'lock not granted within MAINTENANCE_LOCK_TIMEOUT: skipped, retried on the next run',
      );
      return;
    case 'gone':
      log.info({ ...target, statement }, 'dropped since it was planned: skipped');
      return;
    case 'failed':
      log.error({ ...target, statement, err: { message: o.error, code: o.code } }, 'statement failed');
  }
}

export function round(s: number): number {
  return Math.round(s * 1000) / 1000;
}
