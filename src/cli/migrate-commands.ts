/** `pg-maintd migrate up | status | verify | baseline`: the schema migrations of MIGRATIONS_DIR. */
import { Command, Option } from 'commander';
import { type Config } from '../config/load.js';
import { describeTarget, parseDatabaseUrl } from '../core/database-url.js';
import { OperatorError } from '../core/errors.js';
import { unavailableError } from '../db/unavailable.js';
import { EXIT } from '../core/exit-codes.js';
import {
  baselineMigrations,
  migrateUp,
  migrationStatus,
  verifyMigrations,
  type MigrateOptions,
} from '../migrate/runner.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';
import { withSignalAbort } from './signal-abort.js';

/** The runner's options from the configuration; a database that cannot be reached becomes exit 69 with the fix. */
async function withMigrate<T>(
  opts: Record<string, unknown>,
  fn: (o: MigrateOptions, config: Config) => Promise<T>,
): Promise<T> {
  const { loaded, logger } = commandConfig(opts);
  const { config } = loaded;
  // SIGINT/SIGTERM: the running migration is cancelled and rolled back, then the exit is 130/143
  return withSignalAbort(
    logger,
    'stopping; the migration in flight is rolled back',
    async (signal) => {
      const o: MigrateOptions = {
        db: config.db,
        dir: config.migrations.dir,
        logger,
        lockWaitMs: config.migrations.lockWaitMs,
        lockTimeoutMs: config.migrations.lockTimeoutMs,
        signal,
      };
      try {
        return await fn(o, config);
      } catch (err) {
        if (err instanceof OperatorError) throw err;
        throw unavailableError(err, describeTarget(parseDatabaseUrl(config.db.url))) ?? err;
      }
    },
    'pg-maintd migrate',
  );
}

const jsonOption = () => new Option('--json', 'print JSON');

export function addMigrateCommands(program: Command): void {
  const migrate = program
    .command('migrate')
    .description('schema migrations (MIGRATIONS_DIR): up, status, verify, baseline');

  addConfigOptions(
    migrate
      .command('up')
      .description('apply the pending migrations, each in its own transaction')
      .addOption(jsonOption()),
  ).action(async (opts: Record<string, unknown>) => {
    await withMigrate(opts, async (o) => {
      const r = await migrateUp(o);
      if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else if (r.applied.length === 0) process.stdout.write('schema is up to date: nothing to apply\n');
      else
        for (const a of r.applied)
          process.stdout.write(`applied ${a.file} in ${a.durationMs} ms${a.note ? ` (${a.note})` : ''}\n`);
    });
  });

  addConfigOptions(
    migrate
      .command('status')
      .description('list the migrations and their state; exit 0 when all are applied and intact, 1 otherwise')
      .addOption(jsonOption()),
  ).action(async (opts: Record<string, unknown>) => {
    await withMigrate(opts, async (o) => {
      const rows = await migrationStatus(o);
      if (opts.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
      else {
        const lines = rows.map((r) =>
          [
            String(r.version).padStart(4, '0'),
            r.name.padEnd(28),
            r.state.padEnd(12),
            r.appliedAt ? r.appliedAt.toISOString() : '-'.padEnd(24),
            r.durationMs !== undefined ? `${r.durationMs} ms` : '-',
            r.baselined ? '(baselined)' : '',
          ]
            .join('  ')
            .trimEnd(),
        );
        process.stdout.write(
          `${['VER   NAME                          STATE         APPLIED AT                DURATION', ...lines].join('\n')}\n`,
        );
      }
      if (rows.some((r) => r.state !== 'applied')) process.exitCode = EXIT.FAILURE;
    });
  });

  addConfigOptions(
    migrate
      .command('verify')
      .description(
        'check that every applied migration matches its file and no index they built is INVALID; exit 0 or 1',
      )
      .addOption(jsonOption()),
  ).action(async (opts: Record<string, unknown>) => {
    await withMigrate(opts, async (o) => {
      const r = await verifyMigrations(o);
      if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        for (const p of r.problems) process.stdout.write(`problem: ${p}\n`);
        if (r.pending.length) process.stdout.write(`pending (not a problem): ${r.pending.join(', ')}\n`);
        if (r.ok) process.stdout.write('applied migrations are intact\n');
      }
      if (!r.ok) process.exitCode = EXIT.FAILURE;
    });
  });

  addConfigOptions(
    migrate
      .command('baseline')
      .description(
        'adopt a database that already holds the schema: record the migrations as applied without running them',
      )
      .addOption(
        new Option('--to <version>', 'record only up to this version (default: all)').argParser(Number),
      ),
  ).action(async (opts: Record<string, unknown>) => {
    await withMigrate(opts, async (o) => {
      const files = await baselineMigrations(o, typeof opts.to === 'number' ? opts.to : undefined);
      process.stdout.write(
        `baselined ${files.length} migrations: recorded as applied with their checksums, none of them run:\n${files.map((f) => `  ${f}\n`).join('')}\`pg-maintd migrate status\` lists them as applied (baselined); later migrations apply as usual\n`,
      );
    });
  });
}
