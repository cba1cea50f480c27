/**
 * The commands PostgreSQL runs itself: `wal-push %p` (archive_command). They never connect to the
 * database, run in the data directory with the server's environment, and say nothing on success:
 * their standard error goes to the server's log.
 */
import type { Command } from 'commander';
import { catalogFor } from '../backup/catalog-for.js';
import { createStorage } from '../backup/storage/index.js';
import { systemIdentifierOf } from '../pitr/pg-control.js';
import { pushWalFile } from '../pitr/wal-push.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';
import { withSignalAbort } from './signal-abort.js';

export function addWalCommands(program: Command): void {
  addConfigOptions(
    program
      .command('wal-push')
      .argument('<path>', 'the WAL file, as archive_command passes it (%p)')
      .option(
        '--data-dir <dir>',
        'the data directory (default: the current directory, where PostgreSQL runs it)',
      )
      .description(
        "store one WAL file for point-in-time recovery: archive_command = 'pg-maintd wal-push %p' (exit 0 only once it is stored)",
      ),
  ).action(async (path: string, opts: Record<string, unknown>) => {
    const { loaded, logger } = commandConfig(opts, { databaseOptional: true });
    const storage = await createStorage(loaded.config);
    try {
      await storage.check();
      const sysid = await systemIdentifierOf((opts.dataDir as string | undefined) ?? process.cwd());
      const ws = { storage, sysid, signer: catalogFor(loaded.config, storage).signer };
      const outcome = await withSignalAbort(
        logger,
        'aborting the upload',
        (signal) => pushWalFile(ws, path, signal),
        'pg-maintd wal-push',
      );
      logger.debug({ job: 'wal-push', outcome }, 'WAL file stored');
    } finally {
      storage.close();
    }
  });
}
