/** One-shot commands: backup, backups list, restore, retention, verify. */
import { Command, Option } from 'commander';
import { runBackup } from '../backup/backup.js';
import type { Catalog } from '../backup/catalog.js';
import { catalogFor } from '../backup/catalog-for.js';
import { encryptionOf, verifyResult } from '../backup/manifest.js';
import { databaseNameProblem, printable } from '../backup/naming.js';
import { restoreBackup } from '../backup/restore.js';
import { runGlobalsBackup } from '../backup/globals-backup.js';
import {
  applyGlobals,
  prepareGlobals,
  restoreGlobals,
  type GlobalsRestoreResult,
} from '../backup/globals-restore.js';
import { listGlobals } from '../backup/globals-catalog.js';
import { applyRetention, type RetentionDeps } from '../backup/retention.js';
import { createStorage, type Storage } from '../backup/storage/index.js';
import { runVerification } from '../backup/verify.js';
import { serverClock, systemIdentifier, withClusterFact } from '../db/cluster.js';
import { type Config } from '../config/load.js';
import { url } from '../config/kinds.js';
import { urlPassword } from '../core/mask.js';
import { DbPool } from '../db/pool.js';
import { explainConnectionError } from '../db/sqlstate.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT, type ExitCode } from '../core/exit-codes.js';
import { type Logger } from '../log/logger.js';
import { humanBytes } from '../core/units.js';
import { asLeader } from '../db/leader.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';
import { leaseRefusal } from './lease-refusal.js';
import { withSignalAbort } from './signal-abort.js';
import { LEASE_SESSION } from '../db/lease.js';
import { serverRole } from '../db/server-role.js';

interface Context {
  config: Config;
  storage: Storage;
  logger: Logger;
  catalog: Catalog;
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
  const { loaded, logger } = commandConfig(opts);
  const storage = await createStorage(loaded.config, { notice: (m) => logger.warn({ job: 'storage' }, m) });
  try {
    const catalog = catalogFor(loaded.config, storage);
    return await withSignalAbort(
      logger,
      'aborting; the work in flight is rolled back',
      (signal) => fn({ config: loaded.config, storage, logger, catalog, signal }),
      `pg-maintd ${command}`,
    );
  } finally {
    storage.close();
  }
}

/** A failure on the way to the lease: which database, what is wrong, what to check. */
function leaseError(err: unknown, target: string): { message: string; hint?: string | undefined } {
  if (err instanceof OperatorError) return err;
  const { message, hint } = explainConnectionError(err, target);
  return { message: `cannot take the backup's lease: ${message}`, hint };
}

function databasesOf(config: Config, opts: Record<string, unknown>): string[] {
  if (typeof opts.database !== 'string') return config.backup.databases;
  // Node turns bytes of an argument that are not UTF-8 into U+FFFD: that name was not what was typed
  const problem = opts.database.includes('\uFFFD')
    ? 'it is not valid UTF-8 (database names are UTF-8 text here)'
    : databaseNameProblem(opts.database);
  if (problem)
    throw new OperatorError(`--database ${JSON.stringify(opts.database)}: ${problem}`, {
      exitCode: EXIT.USAGE,
      hint: 'give the name of a database, as `\\l` in psql lists it',
    });
  return [opts.database];
}

/** An empty listing says where it looked and what to do, so a wrong store or name is seen at once. */
function nothingListed(config: Config, storage: Storage, databases: string[]): string {
  const where = config.s3.bucket
    ? 'S3_BUCKET and S3_PREFIX (and S3_ENDPOINT, S3_REGION)'
    : 'BACKUP_DIR (or set S3_BUCKET for S3)';
  return [
    `no backups found: looked in ${storage.description} for database${databases.length === 1 ? '' : 's'} ${databases.map(printable).join(', ')}`,
    `  to take one now: pg-maintd backup${databases.length === 1 ? '' : ' (or --database <name> for one)'}`,
    `  if backups should be there: check ${where} and BACKUP_DATABASES (or --database), the settings the backups were taken with`,
    '',
  ].join('\n');
}

/** Retention as a one-shot command runs it: the database's clock is a second reference where it answers. */
function retentionDeps(ctx: Context): RetentionDeps {
  return {
    ...ctx,
    clockToleranceMs: ctx.config.backup.clockSkewToleranceMs,
    databaseClock: () => withClusterFact(ctx.config.db, ctx.logger, serverClock),
  };
}

const databaseOption = () =>
  new Option('--database <name>', 'only this database (default: BACKUP_DATABASES)');

type Outcome = 'ok' | 'failed' | 'retention_failed' | { refused: ExitCode };

/**
 * One database under the daemon's lease (a backup by hand and a scheduled one never run at once),
 * or on a hot standby under none: the backup, then retention, whose failure is its own (the backup
 * stays good).
 */
async function backupOne(
  ctx: Context,
  database: string,
  lockPool: DbPool,
  lease: { ttlMs: number; logger: Logger },
): Promise<Outcome> {
  const name = printable(database);
  const report = (what: string, e: { message: string; hint?: string | undefined }) =>
    process.stderr.write(`pg-maintd: ${what}: ${e.message}${e.hint ? `\n  fix: ${e.hint}` : ''}\n`);
  let started = false;
  let retention: 'ok' | 'failed' = 'ok';
  const work = async (leaseSignal?: AbortSignal) => {
    started = true;
    const m = await runBackup(ctx, database, {
      signal: leaseSignal ? AbortSignal.any([ctx.signal, leaseSignal]) : ctx.signal,
    });
    process.stdout.write(
      `backup of ${name}: ${ctx.catalog.storage.description}${ctx.catalog.storage.description.endsWith('/') ? '' : '/'}${m.key} (${m.size} bytes, sha256 ${m.sha256})${m.warnings.length ? `, ${m.warnings.length} pg_dump warning(s) in the log and manifest` : ''}\n`,
    );
    try {
      const plan = await applyRetention(retentionDeps(ctx), database, ctx.config.retention);
      if (plan.skipped)
        throw new OperatorError(`retention skipped: ${plan.skipped}`, { hint: 'fix the clock (NTP)' });
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      retention = 'failed';
      report(`the backup of ${name} is good, but retention after it failed`, err as OperatorError);
    }
  };
  try {
    // a hot standby's lease table is read-only: a backup by hand there takes none (the daemon's
    // scheduled ones there coordinate through the store, by slot; this one has no slot)
    if ((await serverRole(lockPool)) === 'standby') {
      ctx.logger.info({ database }, 'the server is a hot standby: backing up without a lease');
      await work();
      return retention === 'ok' ? 'ok' : 'retention_failed';
    }
    const r = await asLeader(lockPool, `backup:${database}`, lease, work);
    if (r.led) return retention === 'ok' ? 'ok' : 'retention_failed';
    const { text, exitCode } = leaseRefusal('backup', database, r);
    process.stderr.write(text);
    return exitCode === EXIT.FAILURE ? 'failed' : { refused: exitCode };
  } catch (err) {
    if (ctx.signal.aborted) throw err; // nothing was kept; reported as interrupted
    report(
      `backup of ${name} failed`,
      started ? (err as OperatorError) : leaseError(err, lockPool.description),
    );
    return 'failed';
  }
}

/** `backups list --globals`: good globals (newest first) and leftovers. */
async function listStoredGlobals(catalog: Catalog, json: boolean): Promise<void> {
  const { good, incomplete } = await listGlobals(catalog);
  if (json) {
    const doc = {
      globals: good.map((g) => ({
        key: g.key,
        startedAt: g.manifest.startedAt,
        sizeBytes: g.size,
        sha256: g.manifest.sha256,
        passwords: g.manifest.passwords,
        encryption: g.manifest.encryption ?? null,
        systemIdentifier: g.manifest.systemIdentifier,
        signed: g.manifest.signature !== undefined,
        suspicious: g.suspect ?? null,
      })),
      incomplete: incomplete.map((l) => ({ key: l.key, why: l.why })),
    };
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    return;
  }
  for (const g of good)
    process.stdout.write(
      `${printable(g.key)}  ${g.manifest.startedAt}  ${humanBytes(g.size)}${g.manifest.encryption ? `  age: ${g.manifest.encryption.recipients.map(shortRecipient).join(', ')}` : ''}${g.manifest.passwords ? '  with passwords' : ''}${g.suspect ? `  NOT TRUSTED (${printable(g.suspect)})` : ''}\n`,
    );
  for (const l of incomplete) process.stdout.write(`${printable(l.key)}  incomplete: ${printable(l.why)}\n`);
  if (good.length === 0 && incomplete.length === 0) process.stdout.write('no globals stored\n');
}

export function addBackupCommands(program: Command): void {
  addConfigOptions(
    program
      .command('backup')
      .description(
        'take a backup now (each configured database), then apply retention; exit 0 only if all succeeded',
      )
      .addOption(databaseOption())
      .option(
        '--globals',
        "also store the cluster's globals (roles, memberships, role settings, tablespaces; scheduled runs store them with BACKUP_GLOBALS)",
      ),
  ).action(async (opts: Record<string, unknown>) => {
    await withContext('backup', opts, async (ctx) => {
      const databases = databasesOf(ctx.config, opts);
      await ctx.storage.check(); // a store that cannot be used fails once, with exit 69, before any dump
      // the daemon's lease per database: a backup by hand and a scheduled one never run at once
      const lockPool = new DbPool(ctx.config.db, {
        name: 'lease',
        max: 2,
        min: 0,
        logger: ctx.logger,
        ...LEASE_SESSION,
      });
      const lease = { ttlMs: ctx.config.leases.ttlMs, logger: ctx.logger };
      const outcomes: Outcome[] = [];
      // the cluster's globals, once, before the dumps as a scheduled run stores them; their
      // failure is reported (logged, on stderr, exit 1) and does not stop the dumps
      let globalsFailed = false;
      if (opts.globals === true)
        await runGlobalsBackup(ctx, { signal: ctx.signal }).then(
          (g) => process.stdout.write(`globals stored: ${printable(g.key)}\n`),
          (err: unknown) => {
            globalsFailed = true;
            process.stderr.write(`globals not stored: ${errorMessage(err)}\n`);
          },
        );
      try {
        for (const database of databases) outcomes.push(await backupOne(ctx, database, lockPool, lease));
      } finally {
        await lockPool.stop();
      }
      // a failure outranks a failed retention, which outranks "try again later"
      if (outcomes.includes('failed') || globalsFailed) process.exitCode = EXIT.FAILURE;
      else if (outcomes.includes('retention_failed')) process.exitCode = EXIT.RETENTION_FAILED;
      else {
        const refused = outcomes.find((o): o is { refused: ExitCode } => typeof o === 'object');
        if (refused) process.exitCode = refused.refused;
      }
    });
  });

  const backups = program.command('backups').description('inspect stored backups');
  addConfigOptions(
    backups
      .command('list')
      .description('list good backups (key, time, size, duration, verified) and incomplete leftovers')
      .addOption(databaseOption())
      .option('--globals', "list the stored globals (the cluster's roles) instead")
      .option('--json', 'print JSON'),
  ).action(async (opts: Record<string, unknown>) => {
    await withContext('backups list', opts, async (ctx) => {
      if (opts.globals === true) return listStoredGlobals(ctx.catalog, opts.json === true);
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
                systemIdentifier: 'systemIdentifier' in g.manifest ? g.manifest.systemIdentifier : null,
                signed: 'signature' in g.manifest && g.manifest.signature !== undefined,
                encryption: encryptionOf(g.manifest) ?? null,
                warnings: 'warnings' in g.manifest ? g.manifest.warnings : [],
                suspicious: g.suspect ? { reason: g.suspect.reason, detail: g.suspect.detail } : null,
                verified: g.verify
                  ? { ok: g.verify.ok, result: verifyResult(g.verify), at: g.verify.verifiedAt }
                  : null,
              })),
              incomplete: d.incomplete,
            })),
            null,
            2,
          )}\n`,
        );
        return;
      }
      const empty = all.filter((d) => d.good.length === 0 && d.incomplete.length === 0);
      if (empty.length === all.length) {
        process.stdout.write(
          nothingListed(
            ctx.config,
            ctx.storage,
            all.map((d) => d.database),
          ),
        );
        return;
      }
      const rows = [['KEY', 'TIME (UTC)', 'SIZE', 'DURATION', 'ENCRYPTION', 'STATUS']];
      for (const d of all) {
        for (const g of d.good) {
          const warnings = 'warnings' in g.manifest ? g.manifest.warnings.length : 0;
          const encryption = encryptionOf(g.manifest);
          const status = [
            g.suspect ? `SUSPICIOUS: ${g.suspect.detail}` : undefined,
            g.verify
              ? `verified ${verifyResult(g.verify)} ${g.verify.verifiedAt.slice(0, 10)}`
              : 'not verified',
            warnings ? `${warnings} pg_dump warning(s)` : undefined,
          ].filter(Boolean);
          rows.push([
            printable(g.key),
            g.manifest.startedAt.replace('T', ' ').slice(0, 19),
            humanBytes(g.size),
            `${g.manifest.durationSeconds.toFixed(1)}s`,
            // after a key rotation: which identity a restore of each needs
            encryption ? `age: ${encryption.recipients.map(shortRecipient).join(', ')}` : 'none',
            status.join('; '),
          ]);
        }
        for (const l of d.incomplete)
          rows.push([
            printable(l.key),
            l.lastModified.toISOString().replace('T', ' ').slice(0, 19),
            '-',
            '-',
            '-',
            `${l.deletable ? 'incomplete' : 'NOT TRUSTED'}: ${printable(l.why)}`,
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
      if (empty.length)
        process.stdout.write(
          `\nno backups of ${empty.map((d) => printable(d.database)).join(', ')} in ${ctx.storage.description}\n`,
        );
      const warned = all
        .flatMap((d) => d.good)
        .filter((g) => 'warnings' in g.manifest && g.manifest.warnings.length);
      for (const g of warned.slice(0, 1))
        process.stdout.write(
          `\npg_dump warnings of ${printable(g.key)}:\n${('warnings' in g.manifest ? g.manifest.warnings : []).map((w) => `  ${w}`).join('\n')}\n`,
        );
    });
  });

  addConfigOptions(
    program
      .command('restore')
      .description(
        'restore a backup into a database: checksum verified while streaming, one transaction, refuses a non-empty target unless --clean; owners and GRANTs as the dump holds them (BACKUP_OWNERSHIP=keep): their roles must exist, --globals creates them',
      )
      .option('--latest', 'the newest good backup of --database')
      .option('--key <key>', 'the backup to restore, as listed by `backups list`')
      .option(
        '--globals',
        "apply the cluster's newest stored globals (roles, memberships, role settings, tablespaces) to the target's server first; alone, only them. Roles the server has are left as they are",
      )
      .option(
        '--globals-key <key>',
        'with --globals: these globals instead of the newest (`backups list --globals`)',
      )
      .addOption(databaseOption())
      .requiredOption(
        '--target-url <url>',
        'database to restore into (password via PGPASSWORD or ~/.pgpass, not here)',
      )
      .option('--clean', 'drop and replace the objects the backup contains')
      .option(
        '--no-owner',
        "restore without the dump's owners and GRANTs: the restoring role owns everything (custom format only; a plain dump that keeps them needs its roles: --globals)",
      )
      .option(
        '--allow-unsigned',
        'with BACKUP_SIGNING_KEY_FILE set: restore a backup whose signature is missing or wrong (it may have been altered)',
      )
      .option(
        '--allow-other-cluster',
        'with --latest: take the newest backup even when another cluster than that of DATABASE_URL wrote it',
      ),
  ).action(async (opts: Record<string, unknown>) => {
    const targetUrl = String(opts.targetUrl);
    if (!url(['postgres:', 'postgresql:']).safeParse(targetUrl).success)
      throw new OperatorError(`--target-url is not a usable postgres:// URL`, {
        exitCode: EXIT.USAGE,
        hint: 'give one such as postgresql://admin@db.internal:5432/app_restored (percent-encode odd characters in the name)',
      });
    if (urlPassword(targetUrl)) {
      throw new OperatorError(
        '--target-url carries a password, which every local user can read in the process list',
        {
          exitCode: EXIT.USAGE,
          hint: 'drop the password from the URL and pass it in PGPASSWORD or ~/.pgpass',
        },
      );
    }
    const globals = opts.globals === true || typeof opts.globalsKey === 'string';
    if (opts.latest && opts.key)
      throw new OperatorError('give exactly one of --latest and --key', { exitCode: EXIT.USAGE });
    if (!opts.latest && !opts.key && !globals)
      throw new OperatorError('give exactly one of --latest and --key (or --globals)', {
        exitCode: EXIT.USAGE,
      });
    await withContext('restore', opts, async (ctx) => {
      const globalsOptions = {
        catalog: ctx.catalog,
        logger: ctx.logger,
        ssl: ctx.config.db.ssl,
        clientBinDir: ctx.config.backup.clientBinDir,
        spoolDir: ctx.config.backup.spoolDir,
        identityFile: ctx.config.backup.encryption.identityFile,
        key: typeof opts.globalsKey === 'string' ? opts.globalsKey : undefined,
        targetUrl,
        signal: ctx.signal,
      };
      const printGlobals = (g: GlobalsRestoreResult) => {
        process.stdout.write(
          `globals ${printable(g.globals.key)} (checksum ok): ${g.created.length} roles created, ${g.existing.length} already there left as they are, ${g.tablespaces.length} tablespaces created\n`,
        );
      };
      if (globals && !opts.latest && !opts.key) {
        printGlobals(await restoreGlobals(globalsOptions));
        return;
      }
      // with a dump too, the globals are read and checked first and applied only once the dump has
      // passed its own checks (its identity, an empty target, its checksum): a dump that cannot be
      // restored leaves no roles behind on the target's server
      const prepared = globals ? await prepareGlobals(globalsOptions) : undefined;
      const database = databasesOf(ctx.config, opts)[0];
      const r = await restoreBackup({
        choice: {
          allowUnsigned: opts.allowUnsigned === true,
          allowOtherCluster: opts.allowOtherCluster === true,
          // --latest means the newest of the cluster backed up; unreachable, the store must be unambiguous
          sourceCluster: opts.latest
            ? await withClusterFact(ctx.config.db, ctx.logger, systemIdentifier)
            : undefined,
        },
        catalog: ctx.catalog,
        logger: ctx.logger,
        ssl: ctx.config.db.ssl,
        clientBinDir: ctx.config.backup.clientBinDir,
        spoolDir: ctx.config.backup.spoolDir,
        identityFile: ctx.config.backup.encryption.identityFile,
        key: typeof opts.key === 'string' ? opts.key : undefined,
        database,
        targetUrl,
        clean: opts.clean === true,
        // commander's --no-owner: owner is false when it is given
        noOwner: opts.owner === false,
        signal: ctx.signal,
        beforeClient: prepared
          ? async () => printGlobals(await applyGlobals(globalsOptions, prepared))
          : undefined,
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
      let skipped = 0;
      for (const database of databasesOf(ctx.config, opts)) {
        const plan = await applyRetention(retentionDeps(ctx), database, ctx.config.retention, {
          dryRun: opts.dryRun === true,
        });
        const verb = plan.skipped ? 'would delete, but did not' : opts.dryRun ? 'would delete' : 'deleted';
        for (const r of plan.remove) process.stdout.write(`${verb} ${printable(r.key)}  (${r.why})\n`);
        for (const k of plan.keep)
          process.stdout.write(`keep   ${printable(k.key)}  (${k.why.join(', ')})\n`);
        if (plan.skipped) {
          skipped++;
          process.stderr.write(
            `pg-maintd: retention of ${printable(database)} skipped: ${plan.skipped}\n  fix: correct the clock (NTP) of this host, the store or the database server, then run again\n`,
          );
        }
      }
      if (skipped) process.exitCode = EXIT.FAILURE;
    });
  });

  addConfigOptions(
    program
      .command('verify')
      .description(
        'restore drill: restore the newest good backup into a scratch database and compare row counts',
      )
      .addOption(databaseOption())
      .option('--key <key>', 'drill this backup instead of the newest')
      .option(
        '--allow-other-cluster',
        'drill the newest backup even when another cluster than that of DATABASE_URL wrote it',
      ),
  ).action(async (opts: Record<string, unknown>) => {
    if (opts.key === '')
      throw new OperatorError('--key is empty', {
        exitCode: EXIT.USAGE,
        hint: 'give a key as `pg-maintd backups list` prints it, or leave --key out for the newest',
      });
    await withContext('verify', opts, async (ctx) => {
      let failed = 0;
      for (const database of databasesOf(ctx.config, opts)) {
        const rec = await runVerification(ctx, database, {
          signal: ctx.signal,
          key: typeof opts.key === 'string' ? opts.key : undefined,
          allowOtherCluster: opts.allowOtherCluster === true,
        });
        const result = verifyResult(rec);
        process.stdout.write(
          `${result === 'ok' ? 'ok' : result.toUpperCase()}: ${printable(rec.key)}: ${rec.tablesCompared} tables compared${rec.mismatches.length ? `, ${rec.mismatches.length} mismatched` : ''}${rec.reason ? `: ${rec.reason}` : ''}${rec.error ? `: ${rec.error}` : ''}\n`,
        );
        if (!rec.ok) failed++;
      }
      if (failed) process.exitCode = EXIT.FAILURE;
    });
  });
}

/** A recipient, short enough for a table column (the JSON listing has it whole). */
function shortRecipient(r: string): string {
  return r.length > 16 ? `${r.slice(0, 10)}…${r.slice(-4)}` : r;
}
