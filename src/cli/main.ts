/** The pg-maintd command line: run (default), check-config, backup commands, status, migrate, maintenance, doctor, demo. */
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config/load.js';
import { preflight } from './preflight.js';
import { runDaemon } from '../daemon.js';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { createLogger, makeScrubber } from '../log/logger.js';
import { VERSION } from '../core/version.js';
import { renderConfig } from './check-config.js';
import { addConfigOptions, configInput } from './config-options.js';
import { runDemo } from './demo.js';
import { renderSettingsHelp } from './settings-help.js';
import { addDoctorCommand } from './doctor-command.js';
import { addBackupCommands } from './backup-commands.js';
import { addMigrateCommands } from './migrate-commands.js';
import { addMaintenanceCommands } from './maintenance-commands.js';
import { addStatusCommand } from './status-command.js';
import { addWalCommands } from './wal-commands.js';
import { addPitrCommands } from './pitr-commands.js';

export function buildProgram(): Command {
  const program = new Command('pg-maintd')
    .description('Backs up, monitors, migrates and maintains a production PostgreSQL database.')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run `pg-maintd --help` for usage)')
    .showSuggestionAfterError(true)
    .exitOverride()
    .addHelpText(
      'after',
      "\nSettings come from the environment, a config file or flags: `pg-maintd help settings` lists them,\nas does the README's configuration table.",
    );

  addConfigOptions(
    program
      .command('run')
      .description('run the daemon: HTTP server (/metrics, /healthz, /readyz) and scheduled jobs'),
  ).action(async (opts: Record<string, unknown>) => {
    const loaded = preflight(loadConfig(configInput(opts)));
    const logger = createLogger({ ...loaded.config.log, secrets: loaded.secrets });
    await runDaemon(loaded, logger);
  });

  addConfigOptions(
    program
      .command('check-config')
      .description('validate the configuration and print it with secrets masked (exit 0, or 78 when invalid)')
      .option('--json', 'print JSON'),
  ).action((opts: Record<string, unknown>) => {
    const loaded = preflight(loadConfig(configInput(opts)));
    process.stdout.write(`${renderConfig(loaded, opts.json === true)}\n`);
  });

  addBackupCommands(program);
  addStatusCommand(program);
  addMigrateCommands(program);
  addMaintenanceCommands(program);
  addDoctorCommand(program);

  program
    .command('help [topic...]')
    .description('help for a command (`help migrate up`), or `help settings`: every setting, grouped')
    .action((topic: string[]) => {
      if (topic.length === 1 && topic[0] === 'settings') {
        process.stdout.write(renderSettingsHelp());
        return;
      }
      let cmd: Command = program;
      for (const word of topic) {
        const sub = cmd.commands.find((c) => c.name() === word);
        if (!sub)
          throw new OperatorError(`no help for "${topic.join(' ')}": there is no such command`, {
            hint: 'run `pg-maintd help` for the commands, or `pg-maintd help settings` for the settings',
            exitCode: EXIT.USAGE,
          });
        cmd = sub;
      }
      cmd.outputHelp();
    });

  addWalCommands(program);
  addPitrCommands(program);

  addConfigOptions(
    program
      .command('demo')
      .description(
        'start a throwaway local PostgreSQL cluster and run the daemon against it (Ctrl-C stops and cleans up)',
      ),
  ).action(async (opts: Record<string, unknown>) => {
    await runDemo(configInput(opts));
  });

  return program;
}

const TOP_LEVEL_FLAGS = new Set(['-h', '--help', '-V', '--version']);

export async function main(argv: string[]): Promise<void> {
  // `pg-maintd help settings | head`: a reader that stops early is no error to report
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  const program = buildProgram();
  // `run` is the default: `pg-maintd` and `pg-maintd --http-port 9188` run the daemon, while an
  // unknown word is still reported as an unknown command.
  const first = argv[2];
  const args =
    first === undefined || (first.startsWith('-') && !TOP_LEVEL_FLAGS.has(first))
      ? [...argv.slice(0, 2), 'run', ...argv.slice(2)]
      : argv;
  try {
    await program.parseAsync(args);
  } catch (err) {
    process.exitCode = reportError(err);
  }
}

/** Prints an error the way an operator should see it and returns the exit code. */
function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander has printed its message already; help and --version exit 0
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0)
      return EXIT.OK;
    return EXIT.USAGE;
  }
  // written without the logger: scrubbed the same way (URL passwords, the configuration's secrets)
  const scrub = makeScrubber([]);
  if (err instanceof OperatorError) {
    const text = scrub(err.describe());
    process.stderr.write(`${text.startsWith('pg-maintd:') ? text : `pg-maintd: ${text}`}\n`);
    return err.exitCode;
  }
  process.stderr.write(
    scrub(`pg-maintd: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`),
  );
  return EXIT.SOFTWARE;
}
