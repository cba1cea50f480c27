/** `pg-maintd maintenance run [--dry-run] [--database NAME] [--job vacuum|reindex] [--json]`. */
import { Option, type Command } from 'commander';
import { type Config } from '../config/load.js';
import { DbPool } from '../db/pool.js';
import { errorMessage, OperatorError } from '../core/errors.js';
import { unavailableError } from '../db/unavailable.js';
import { EXIT, type ExitCode } from '../core/exit-codes.js';
import { type Logger } from '../log/logger.js';
import { maintainAsLeader } from '../maintenance/job.js';
import { MAINTENANCE_STEPS, type MaintenanceStep } from '../maintenance/metrics.js';
import { statementFor } from '../maintenance/plan.js';
import { runMaintenance, type MaintenanceReport } from '../maintenance/run.js';
import type { Outcome } from '../maintenance/step.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';
import { leaseRefusal } from './lease-refusal.js';
import { withSignalAbort } from './signal-abort.js';
import { LEASE_SESSION } from '../db/lease.js';

export function addMaintenanceCommands(program: Command): void {
  const maintenance = program
    .command('maintenance')
    .description('vacuum, analyze and reindex what needs it, with lock_timeout on every statement');
  addConfigOptions(
    maintenance
      .command('run')
      .description(
        'run maintenance now: VACUUM (ANALYZE) or ANALYZE the tables that need it, REINDEX INDEX CONCURRENTLY invalid and bloated indexes; exit 0 only if everything planned was done',
      )
      .option('--dry-run', 'print the plan (which tables and indexes, and why) and change nothing')
      .addOption(new Option('--database <name>', 'only this database (default: MAINTENANCE_DATABASES)'))
      .addOption(new Option('--job <step>', 'only this step').choices([...MAINTENANCE_STEPS]))
      .option('--json', 'print JSON'),
  ).action(async (opts: Record<string, unknown>) => {
    const { loaded, logger } = commandConfig(opts);
    const { config } = loaded;
    const databases = typeof opts.database === 'string' ? [opts.database] : config.maintenance.databases;
    const steps = typeof opts.job === 'string' ? [opts.job as MaintenanceStep] : MAINTENANCE_STEPS;
    const exit = await withSignalAbort(logger, 'aborting: the statement in flight is cancelled', (signal) =>
      maintain(config, logger, databases, {
        steps,
        signal,
        dryRun: opts.dryRun === true,
        json: opts.json === true,
      }),
    );
    if (exit !== EXIT.OK) process.exitCode = exit;
  });
}

async function maintain(
  config: Config,
  logger: Logger,
  databases: string[],
  opts: { steps: readonly MaintenanceStep[]; signal: AbortSignal; dryRun: boolean; json: boolean },
): Promise<ExitCode> {
  const deps = { config, logger };
  const lockPool = new DbPool(config.db, { name: 'lease', max: 2, min: 0, logger, ...LEASE_SESSION });
  const reports: MaintenanceReport[] = [];
  let exit: ExitCode = EXIT.OK;
  // the first specific code wins over the generic failure; any failure over "try again later" (75)
  const fail = (code: ExitCode) => {
    if (code === EXIT.TEMPFAIL) {
      if (exit === EXIT.OK) exit = code;
    } else if (exit === EXIT.OK || exit === EXIT.FAILURE || exit === EXIT.TEMPFAIL) exit = code;
  };
  try {
    for (const database of databases) {
      if (opts.signal.aborted) break;
      try {
        const run = { signal: opts.signal, steps: opts.steps, dryRun: opts.dryRun };
        // A dry run only reads; a real one takes the daemon's lease, so the two never overlap.
        const r = opts.dryRun
          ? { led: true as const, value: await runMaintenance(deps, database, run) }
          : await maintainAsLeader({ ...deps, lockPool }, database, run);
        if (!r.led) {
          const { text, exitCode } = leaseRefusal('maintenance', database, r);
          process.stderr.write(text);
          fail(exitCode);
          continue;
        }
        reports.push(r.value);
        if (!opts.json) process.stdout.write(renderReport(r.value));
        if (r.value.steps.some((s) => s.result !== undefined && s.result !== 'success')) fail(EXIT.FAILURE);
      } catch (err) {
        const e = asOperatorError(err, lockPool.description);
        process.stderr.write(
          `pg-maintd: maintenance of ${database} failed: ${e.message}${e.hint ? `\n  fix: ${e.hint}` : ''}\n`,
        );
        fail(e.exitCode);
      }
    }
  } finally {
    await lockPool.stop();
  }
  if (opts.json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
  return exit;
}

/** A database that cannot be reached (for the lease, or the maintenance session) is exit 69. */
function asOperatorError(err: unknown, target: string): OperatorError {
  if (err instanceof OperatorError) return err;
  return unavailableError(err, target) ?? new OperatorError(errorMessage(err), { cause: err });
}

const STATUS: Record<Outcome['status'], string> = {
  done: 'done',
  lock_timeout: 'lock timeout',
  gone: 'gone',
  failed: 'FAILED',
};

function renderReport(r: MaintenanceReport): string {
  const lines: string[] = [];
  for (const step of r.steps) {
    const head = r.dryRun
      ? `${r.database}: ${step.job} plan (dry run: nothing is changed)`
      : `${r.database}: ${step.job}: ${step.result} in ${step.seconds.toFixed(1)}s`;
    lines.push(head);
    if (!step.items.length) lines.push('  nothing to do');
    for (const { item, outcome } of step.items) {
      const statement = statementFor(item);
      if (!outcome) {
        lines.push(`  ${statement}`, `      why: ${item.why}`);
        continue;
      }
      const detail =
        outcome.status === 'failed'
          ? `: ${outcome.error}`
          : outcome.status === 'lock_timeout'
            ? ' (retried on the next run)'
            : outcome.status === 'done'
              ? ` (${outcome.seconds.toFixed(1)}s)`
              : '';
      lines.push(`  ${STATUS[outcome.status].padEnd(12)}  ${statement}${detail}`, `      why: ${item.why}`);
    }
    for (const s of step.skipped) lines.push(`  left alone    ${s.schema}.${s.name}: ${s.why}`);
    if (step.error) lines.push(`  stopped: ${step.error}`);
  }
  return `${lines.join('\n')}\n`;
}
