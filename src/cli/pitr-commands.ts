/** Point-in-time recovery's one-shot commands: basebackup, pitr restore, pitr list, pitr verify, pitr drill. */
import { Command, Option } from 'commander';
import { catalogFor } from '../backup/catalog-for.js';
import { createStorage, type Storage } from '../backup/storage/index.js';
import type { Config } from '../config/load.js';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import type { Signer } from '../backup/signing.js';
import { takeBaseBackup } from '../pitr/basebackup.js';
import { runPitrDrill } from '../pitr/drill.js';
import { restorePitr } from '../pitr/restore.js';
import type { RestoreTarget } from '../pitr/restore-plan.js';
import { renderSummary, summarizePitr } from '../pitr/pitr-summary.js';
import { resolveSysid } from '../pitr/sysid.js';
import { parseLsn } from '../pitr/wal-name.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';
import { withSignalAbort } from './signal-abort.js';

interface Ctx {
  config: Config;
  storage: Storage;
  signer: Signer | undefined;
  logger: Logger;
  signal: AbortSignal;
}

async function withPitr<T>(
  opts: Record<string, unknown>,
  databaseOptional: boolean,
  fn: (ctx: Ctx) => Promise<T>,
  command?: string,
): Promise<T> {
  const { loaded, logger } = commandConfig(opts, { databaseOptional });
  const storage = await createStorage(loaded.config, { notice: (m) => logger.warn({ job: 'storage' }, m) });
  try {
    const signer = catalogFor(loaded.config, storage).signer;
    return await withSignalAbort(
      logger,
      'aborting',
      (signal) => fn({ config: loaded.config, storage, signer, logger, signal }),
      command,
    );
  } finally {
    storage.close();
  }
}

/** What the store holds of the cluster --system-identifier (or DATABASE_URL, or the only one) names. */
async function storedSummary(ctx: Ctx, opts: Record<string, unknown>) {
  const sysid = await resolveSysid(
    ctx.storage,
    ctx.config,
    ctx.logger,
    opts.systemIdentifier as string | undefined,
  );
  return summarizePitr(ctx.storage, sysid, ctx.signer);
}

const sysidOption = () =>
  new Option(
    '--system-identifier <id>',
    "the cluster's PITR data to use (default: DATABASE_URL's cluster, or the only one stored)",
  );

function targetOf(opts: Record<string, unknown>): RestoreTarget {
  const given = ['targetTime', 'targetLsn', 'targetName', 'latest'].filter((k) => opts[k] !== undefined);
  if (given.length !== 1)
    throw new OperatorError('give exactly one of --target-time, --target-lsn, --target-name, --latest', {
      exitCode: EXIT.USAGE,
    });
  if (typeof opts.targetTime === 'string') {
    const time = new Date(opts.targetTime);
    // a time without a zone would be read in this host's zone: say it explicitly
    if (Number.isNaN(time.getTime()) || !/(Z|[+-]\d{2}:?\d{2})$/i.test(opts.targetTime.trim()))
      throw new OperatorError(`--target-time ${JSON.stringify(opts.targetTime)} is not a time with a zone`, {
        exitCode: EXIT.USAGE,
        hint: 'e.g. 2026-12-02T20:15:00Z or 2026-12-02 21:15:00+01:00',
      });
    // a Date keeps milliseconds: the microseconds given go to recovery_target_time beside it. More
    // digits PostgreSQL would round, perhaps into the next second: refused rather than guessed
    if (/:\d{2}\.\d{7,}/.test(opts.targetTime))
      throw new OperatorError(`--target-time ${JSON.stringify(opts.targetTime)} has more than 6 decimals`, {
        exitCode: EXIT.USAGE,
        hint: 'PostgreSQL keeps time to the microsecond: give at most 6 digits after the seconds',
      });
    const micros = /:\d{2}\.\d{3}(\d{1,3})/.exec(opts.targetTime);
    return micros
      ? { kind: 'time', time, micros: Number(micros[1]!.padEnd(3, '0')) }
      : { kind: 'time', time };
  }
  if (typeof opts.targetLsn === 'string') {
    const lsn = parseLsn(opts.targetLsn);
    if (lsn === undefined)
      throw new OperatorError(`--target-lsn ${JSON.stringify(opts.targetLsn)} is not an LSN`, {
        exitCode: EXIT.USAGE,
        hint: 'e.g. 16/B374D848',
      });
    return { kind: 'lsn', lsn };
  }
  if (typeof opts.targetName === 'string') return { kind: 'name', name: opts.targetName };
  return { kind: 'latest' };
}

export function addPitrCommands(program: Command): void {
  addConfigOptions(
    program
      .command('basebackup')
      .description(
        'take a base backup for point-in-time recovery now (pg_basebackup, tar, gzip, to the store)',
      ),
  ).action(async (opts: Record<string, unknown>) => {
    await withPitr(
      opts,
      false,
      async (ctx) => {
        const m = await takeBaseBackup(ctx, { trigger: 'command', signal: ctx.signal });
        process.stdout.write(
          `base backup: ${ctx.storage.description}${ctx.storage.description.endsWith('/') ? '' : '/'}${m.key} (${m.size} bytes, ${m.durationSeconds.toFixed(1)} s, WAL ${m.startLsn} .. ${m.stopLsn} on timeline ${m.timeline})\n`,
        );
      },
      'pg-maintd basebackup',
    );
  });

  const pitr = program.command('pitr').description('point-in-time recovery: restore, list, verify, drill');

  addConfigOptions(
    pitr
      .command('restore')
      .description(
        'restore a base backup and WAL into an empty directory, to a target (and with --start, recover it)',
      )
      .requiredOption('--data-dir <dir>', 'an empty or new directory to restore into')
      .option('--target-time <time>', 'recover up to this time (with a zone: 2026-12-02T20:15:00Z)')
      .option('--target-lsn <lsn>', 'recover up to this WAL position')
      .option('--target-name <name>', 'recover up to this restore point (pg_create_restore_point)')
      .option('--latest', 'recover all the WAL the store holds')
      .option('--pause', 'pause at the target instead of promoting (inspect, then pg_wal_replay_resume())')
      .option('--start', 'start PostgreSQL on the directory and wait until recovery ends')
      .option('--port <port>', 'the port for --start (default: a free one)')
      .addOption(sysidOption()),
  ).action(async (opts: Record<string, unknown>) => {
    const target = targetOf(opts);
    const port = opts.port === undefined ? undefined : Number(opts.port);
    if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536))
      throw new OperatorError(`--port ${String(opts.port)} is not a port`, { exitCode: EXIT.USAGE });
    await withPitr(opts, true, async (ctx) => {
      const sysid = await resolveSysid(
        ctx.storage,
        ctx.config,
        ctx.logger,
        opts.systemIdentifier as string | undefined,
      );
      const r = await restorePitr(ctx, {
        dataDir: opts.dataDir as string,
        sysid,
        target,
        pause: opts.pause === true,
        start: opts.start === true,
        ...(port !== undefined ? { port } : {}),
        signal: ctx.signal,
      });
      const lines = [`restored ${r.baseKey} into ${r.dataDir}`];
      if (r.server) {
        lines.push(
          opts.pause === true
            ? 'recovery is paused at the target'
            : 'recovery is complete: the server is promoted and running',
          `connect: psql "host=127.0.0.1 port=${r.server.o.port} user=${r.server.o.login.user ?? 'postgres'} dbname=${r.server.o.login.database}" (the roles and passwords of the backed-up cluster)`,
          `stop it: pg_ctl -D ${r.dataDir} stop; archiving is off in the restored copy (archive_mode): turn it on, and take a base backup, when it replaces the primary`,
        );
      } else
        lines.push(
          `start it to recover: pg_ctl -D ${r.dataDir} start (as the owner of the data; restore_command reads the store itself)`,
        );
      process.stdout.write(`${lines.join('\n')}\n`);
    });
  });

  addConfigOptions(
    pitr
      .command('list')
      .description('base backups, WAL by timeline and the restorable window')
      .option('--json', 'print JSON')
      .addOption(sysidOption()),
  ).action(async (opts: Record<string, unknown>) => {
    await withPitr(opts, true, async (ctx) => {
      const s = await storedSummary(ctx, opts);
      process.stdout.write(opts.json === true ? `${JSON.stringify(s, null, 2)}\n` : renderSummary(s));
    });
  });

  addConfigOptions(
    pitr
      .command('verify')
      .description(
        'check the WAL chain from every base backup (exit 0: no gap; 1: a segment is missing, named)',
      )
      .option('--json', 'print JSON')
      .addOption(sysidOption()),
  ).action(async (opts: Record<string, unknown>) => {
    await withPitr(opts, true, async (ctx) => {
      const s = await storedSummary(ctx, opts);
      const problems = s.bases.flatMap((b) =>
        b.gap
          ? [{ key: b.key, missing: b.gap }]
          : !b.consistent
            ? [{ key: b.key, missing: `WAL up to ${b.stopLsn} (the backup's end)` }]
            : [],
      );
      if (opts.json === true)
        process.stdout.write(
          `${JSON.stringify({ ok: problems.length === 0 && s.bases.length > 0, bases: s.bases, problems }, null, 2)}\n`,
        );
      else {
        for (const b of s.bases)
          process.stdout.write(
            `${b.key}: ${b.gap ? `GAP: segment ${b.gap} is missing` : b.consistent ? `ok, WAL reaches ${b.walReachesTo ?? '-'}` : 'NOT RESTORABLE: its own WAL is missing'}\n`,
          );
        if (s.bases.length === 0) process.stdout.write('no base backups\n');
      }
      if (problems.length > 0 || s.bases.length === 0) process.exitCode = EXIT.FAILURE;
    });
  });

  addConfigOptions(
    pitr
      .command('drill')
      .description(
        'restore the newest base backup and WAL to a recent time in a scratch directory and check the heartbeat found there',
      )
      .option('--json', 'print JSON'),
  ).action(async (opts: Record<string, unknown>) => {
    await withPitr(opts, false, async (ctx) => {
      const rec = await runPitrDrill(ctx, { signal: ctx.signal });
      process.stdout.write(
        opts.json === true
          ? `${JSON.stringify(rec, null, 2)}\n`
          : `PITR drill ${rec.result}${rec.reason ? `: ${rec.reason}` : ''} (${rec.key})\n`,
      );
      if (rec.result !== 'ok') process.exitCode = EXIT.FAILURE;
    });
  });
}
