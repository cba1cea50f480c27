/** `pg-maintd doctor [--apply] [--json]`: checks the server settings and the role, prints each fix. */
import { Option, type Command } from 'commander';
import { runDoctor, type DoctorReport } from '../doctor/doctor.js';
import { renderJson, renderText } from '../doctor/report.js';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';

function percent(flag: string, value: unknown): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 100)
    throw new OperatorError(`${flag} must be a percentage above 0 and at most 100, got ${String(value)}`, {
      exitCode: EXIT.USAGE,
    });
  return n;
}

export function addDoctorCommand(program: Command): void {
  addConfigOptions(
    program
      .command('doctor')
      .description(
        'check the server settings and the role pg-maintd uses, and print each fix (exit 0, 1 when a check failed, 69 when the database is unreachable)',
      )
      .option('--json', 'print JSON')
      .option(
        '--apply',
        'apply the safe fixes (ALTER SYSTEM + pg_reload_conf() for reloadable settings, CREATE EXTENSION pg_stat_statements) when the role may, then check again',
      )
      .addOption(
        new Option(
          '--connections-warn <percent>',
          'warn when this share of the connection slots is in use',
        ).default('80'),
      )
      .addOption(
        new Option(
          '--connections-fail <percent>',
          'fail when this share of the connection slots is in use',
        ).default('95'),
      ),
  ).action(async (opts: Record<string, unknown>) => {
    const warnPct = percent('--connections-warn', opts.connectionsWarn);
    const failPct = percent('--connections-fail', opts.connectionsFail);
    if (warnPct > failPct)
      throw new OperatorError('--connections-warn must not be above --connections-fail', {
        exitCode: EXIT.USAGE,
      });
    const { loaded, logger } = commandConfig(opts);
    let report: DoctorReport;
    try {
      report = await runDoctor({
        config: loaded.config,
        logger,
        apply: opts.apply === true,
        connectionsWarnPct: warnPct,
        connectionsFailPct: failPct,
      });
    } catch (err) {
      // --json readers get a document even when there is no report; stderr says it for people.
      if (opts.json === true && err instanceof OperatorError)
        process.stdout.write(
          `${JSON.stringify({ exitCode: err.exitCode, error: err.message, hint: err.hint ?? null }, null, 2)}\n`,
        );
      throw err;
    }
    process.stdout.write(opts.json === true ? renderJson(report) : renderText(report));
    process.exitCode = report.exitCode;
  });
}
