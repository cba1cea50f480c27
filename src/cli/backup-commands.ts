/** One-shot commands: backup, backups list, restore, retention, verify. */
import { Command, Option } from 'commander';
import { Registry } from 'prom-client';
import { runBackup } from '../backup/backup.js';
import { Catalog } from '../backup/catalog.js';
import { BackupMetrics } from '../backup/metrics.js';
import { restoreBackup } from '../backup/restore.js';
import { applyRetention } from '../backup/retention.js';
import { createStorage, type Storage } from '../backup/storage/index.js';
import { runVerification } from '../backup/verify.js';
import { loadConfig, type Config } from '../config/load.js';
import { urlPassword } from '../config/mask.js';
import { OperatorError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import { createLogger, type Logger } from '../log/logger.js';
import { humanBytes } from '../config/units.js';
import { addConfigOptions, configInput } from './config-options.js';
import { withSignalAbort } from './signal-abort.js';

interface Context {
  config: Config;
  storage: Storage;
  logger: Logger;
  catalog: Catalog;
  metrics: BackupMetrics;
  signal: AbortSignal;
}

/**
 * Loads config, builds the storage, and turns SIGINT/SIGTERM into an abort (a second one exits at
 * once). A command the signal stopped exits 130/143 once its work is rolled back.
 */
async function withContext<T>(
  command: string,
  opts: Record<string, unknown>,
  fn: (ctx: Context) => Promise<T>,
): Promise<T> {
  const loaded = loadConfig(configInput(opts));
  const logger = createLogger({ ...loaded.config.log, secrets: loaded.secrets });
  for (const w of loaded.warnings) logger.warn({ setting: true }, w);
  const storage = await createStorage(loaded.config);
  try {
    const catalog = new Catalog(storage);
    const metrics = new BackupMetrics(new Registry(), loaded.config.backup.databases);
    return await withSignalAbort(
      logger,
      'aborting; the work in flight is rolled back',
      (signal) => fn({ config: loaded.config, storage, logger, catalog, metrics, signal }),
      `pg-maintd ${command}`,
    );
  } finally {
    storage.close();
  }
}

function databasesOf(config: Config, opts: Record<string, unknown>): string[] {
  return typeof opts.database === 'string' ? [opts.database] : config.backup.databases;
}

const databaseOption = () =>
  new Option('--database <name>', 'only this database (default: BACKUP_DATABASES)');

export function addBackupCommands(program: Command): void {
  addConfigOptions(
    program
      .command('backup')
      .description(
        'take a backup now (each configured database), then apply retention; exit 0 only if all succeeded',
      )
      .addOption(databaseOption()),
  ).action(async (opts: Record<string, unknown>) => {
    await withContext('backup', opts, async (ctx) => {
      await ctx.storage.check(); // a store that cannot be used fails once, with exit 69, before any dump
      let failed = 0;
      for (const database of databasesOf(ctx.config, opts)) {
        try {
          const m = await runBackup(ctx, database, { signal: ctx.signal });
          process.stdout.write(
            `backup of ${database}: ${ctx.catalog.storage.description}${ctx.catalog.storage.description.endsWith('/') ? '' : '/'}${m.key} (${m.size} bytes, sha256 ${m.sha256})\n`,
          );
          await applyRetention(ctx, database, ctx.config.retention);
        } catch (err) {
          if (ctx.signal.aborted) throw err; // nothing was kept; reported as interrupted
          failed++;
          const e = err as OperatorError;
          process.stderr.write(
            `pg-maintd: backup of ${database} failed: ${e.message}${e.hint ? `\n  fix: ${e.hint}` : ''}\n`,
          );
        }
      }
      if (failed) process.exitCode = EXIT.FAILURE;
    });
  });

  const backups = program.command('backups').description('inspect stored backups');
  addConfigOptions(
    backups
      .command('list')
      .description('list good backups (key, time, size, duration, verified) and incomplete leftovers')
      .addOption(databaseOption())
      .option('--json', 'print JSON'),
  ).action(async (opts: Record<string, unknown>) => {
    await withContext('backups list', opts, async (ctx) => {
      const all = [];
      for (const database of databasesOf(ctx.config, opts))
        all.push({ database, ...(await ctx.catalog.list(database)) });
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify(
            all.map((d) => ({
              database: d.database,
              backups: d.good.map((g) => ({
                key: g.key,
                startedAt: g.manifest.startedAt,
                sizeBytes: g.size,
                durationSeconds: g.manifest.durationSeconds,
                sha256: g.manifest.sha256,
                verified: g.verify ? { ok: g.verify.ok, at: g.verify.verifiedAt } : null,
              })),
              incomplete: d.incomplete,
            })),
            null,
            2,
          )}\n`,
        );
        return;
      }
      const rows = [['KEY', 'TIME (UTC)', 'SIZE', 'DURATION', 'VERIFIED']];
      for (const d of all) {
        for (const g of d.good) {
          rows.push([
            g.key,
            g.manifest.startedAt.replace('T', ' ').slice(0, 19),
            humanBytes(g.size),
            `${g.manifest.durationSeconds.toFixed(1)}s`,
            g.verify ? `${g.verify.ok ? 'ok' : 'FAILED'} ${g.verify.verifiedAt.slice(0, 10)}` : '-',
          ]);
        }
        for (const l of d.incomplete)
          rows.push([
            l.key,
            l.lastModified.toISOString().replace('T', ' ').slice(0, 19),
            '-',
            '-',
            `incomplete: ${l.why}`,
          ]);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      process.stdout.write(
        `${rows
          .map((r) =>
            r
              .map((c, i) => c.padEnd(widths[i]!))
              .join('  ')
              .trimEnd(),
          )
          .join('\n')}\n`,
      );
    });
  });

  addConfigOptions(
    program
      .command('restore')
      .description(
        'restore a backup into a database: checksum verified while streaming, one transaction, refuses a non-empty target unless --clean',
      )
      .option('--latest', 'the newest good backup of --database')
      .option('--key <key>', 'the backup to restore, as listed by `backups list`')
      .addOption(databaseOption())
      .requiredOption(
        '--target-url <url>',
        'database to restore into (password via PGPASSWORD or ~/.pgpass, not here)',
      )
      .option('--clean', 'drop and replace the objects the backup contains'),
  ).action(async (opts: Record<string, unknown>) => {
    const targetUrl = String(opts.targetUrl);
    if (urlPassword(targetUrl)) {
      throw new OperatorError(
        '--target-url carries a password, which every local user can read in the process list',
        {
          exitCode: EXIT.USAGE,
          hint: 'drop the password from the URL and pass it in PGPASSWORD or ~/.pgpass',
        },
      );
    }
    if (!opts.latest === !opts.key)
      throw new OperatorError('give exactly one of --latest and --key', { exitCode: EXIT.USAGE });
    await withContext('restore', opts, async (ctx) => {
      const database = typeof opts.database === 'string' ? opts.database : ctx.config.backup.databases[0];
      const r = await restoreBackup({
        catalog: ctx.catalog,
        logger: ctx.logger,
        ssl: ctx.config.db.ssl,
        clientBinDir: ctx.config.backup.clientBinDir,
        key: typeof opts.key === 'string' ? opts.key : undefined,
        database,
        targetUrl,
        clean: opts.clean === true,
        signal: ctx.signal,
      });
      process.stdout.write(
        `restored ${r.backup.key} (${humanBytes(r.bytes)}, checksum ok) in ${r.durationSeconds.toFixed(1)}s\n`,
      );
    });
  });

  addConfigOptions(
    program
      .command('retention')
      .description('apply the retention policy now')
      .addOption(databaseOption())
      .option('--dry-run', 'show what would be deleted, delete nothing'),
  ).action(async (opts: Record<string, unknown>) => {
    await withContext('retention', opts, async (ctx) => {
      for (const database of databasesOf(ctx.config, opts)) {
        const plan = await applyRetention(ctx, database, ctx.config.retention, {
          dryRun: opts.dryRun === true,
        });
        const verb = opts.dryRun ? 'would delete' : 'deleted';
        for (const r of plan.remove) process.stdout.write(`${verb} ${r.key}  (${r.why})\n`);
        for (const k of plan.keep) process.stdout.write(`keep   ${k.key}  (${k.why.join(', ')})\n`);
      }
    });
  });

  addConfigOptions(
    program
      .command('verify')
      .description(
        'restore drill: restore the newest good backup into a scratch database and compare row counts',
      )
      .addOption(databaseOption())
      .option('--key <key>', 'drill this backup instead of the newest'),
  ).action(async (opts: Record<string, unknown>) => {
    await withContext('verify', opts, async (ctx) => {
      let failed = 0;
      for (const database of databasesOf(ctx.config, opts)) {
        const rec = await runVerification(ctx, database, {
          signal: ctx.signal,
          key: typeof opts.key === 'string' ? opts.key : undefined,
        });
        process.stdout.write(
          `${rec.ok ? 'ok' : 'FAILED'}: ${rec.key}: ${rec.tablesCompared} tables compared${rec.mismatches.length ? `, ${rec.mismatches.length} mismatched` : ''}${rec.error ? `: ${rec.error}` : ''}\n`,
        );
        if (!rec.ok) failed++;
      }
      if (failed) process.exitCode = EXIT.FAILURE;
    });
  });
}
