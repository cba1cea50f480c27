/**
 * The commands PostgreSQL runs itself: `wal-push %p` (archive_command) and `wal-fetch %f %p`
 * (restore_command). They never connect to the database, run in the data directory with the
 * server's environment, and say nothing on success: their standard error goes to the server's log.
 */
import type { Command } from 'commander';
import { catalogFor } from '../backup/catalog-for.js';
import { encryptionRecipients } from '../backup/encryption.js';
import { createStorage } from '../backup/storage/index.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { segmentBytesOf, systemIdentifierOf } from '../pitr/pg-control.js';
import { fetchViaPrefetch } from '../pitr/prefetch-client.js';
import { recoveryAbort, resolveWal, writeAtomically } from '../pitr/wal-fetch.js';
import { pushWalFile } from '../pitr/wal-push.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';
import { withSignalAbort } from './signal-abort.js';
import { exitNotStored } from './wal-fetch-fast.js';

const dataDirOption = [
  '--data-dir <dir>',
  'the data directory (default: the current directory, where PostgreSQL runs it)',
] as const;

export function addWalCommands(program: Command): void {
  addConfigOptions(
    program
      .command('wal-push')
      .argument('<path>', 'the WAL file, as archive_command passes it (%p)')
      .option(...dataDirOption)
      .description(
        "store one WAL file for point-in-time recovery: archive_command = 'pg-maintd wal-push %p' (exit 0 only once it is stored)",
      ),
  ).action(async (path: string, opts: Record<string, unknown>) => {
    const { loaded, logger } = commandConfig(opts, { databaseOptional: true });
    const storage = await createStorage(loaded.config);
    try {
      await storage.check();
      const sysid = await systemIdentifierOf((opts.dataDir as string | undefined) ?? process.cwd());
      const dataDir = (opts.dataDir as string | undefined) ?? process.cwd();
      const ws = {
        storage,
        sysid,
        signer: catalogFor(loaded.config, storage).signer,
        segmentBytes: await segmentBytesOf(dataDir),
        recipients: () => encryptionRecipients(loaded.config),
      };
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

  addConfigOptions(
    program
      .command('wal-fetch')
      .argument('<file>', 'the WAL file name, as restore_command passes it (%f)')
      .argument('<path>', 'where to write it, as restore_command passes it (%p)')
      .option(...dataDirOption)
      .description(
        "fetch one WAL file for recovery: restore_command = 'pg-maintd wal-fetch %f %p' (exit 1: not stored; 255: corrupt or a gap, recovery aborts)",
      ),
  ).action(async (file: string, path: string, opts: Record<string, unknown>) => {
    const dataDir = (opts.dataDir as string | undefined) ?? process.cwd();
    try {
      // a restore serving this directory has the file verified already (and may be the only one
      // able to read the store): nothing else to load
      const answer = await fetchViaPrefetch(dataDir, file, path);
      if (answer === 'done') return;
      if (answer === 'missing') {
        exitNotStored();
        return;
      }
    } catch (err) {
      if (err instanceof OperatorError) throw err;
      throw recoveryAbort(
        `wal-fetch ${file}: ${errorMessage(err)}`,
        'check the data directory’s permissions',
        err,
      );
    }
    let loaded;
    let logger;
    try {
      ({ loaded, logger } = commandConfig(opts, { databaseOptional: true }));
    } catch (err) {
      // a setting that does not load must stop recovery, not end it quietly
      throw recoveryAbort(
        `wal-fetch ${file}: ${errorMessage(err)}`,
        (err as OperatorError).hint ?? 'fix the settings',
        err,
      );
    }
    const storage = await createStorage(loaded.config).catch((err: unknown) => {
      throw recoveryAbort(`wal-fetch ${file}: ${errorMessage(err)}`, (err as OperatorError).hint ?? '', err);
    });
    try {
      const sysid = await systemIdentifierOf(dataDir).catch((err: unknown) => {
        throw recoveryAbort(errorMessage(err), (err as OperatorError).hint ?? '', err);
      });
      let signer;
      try {
        signer = catalogFor(loaded.config, storage).signer;
      } catch (err) {
        // an unreadable signing key must stop recovery, not end it quietly
        throw recoveryAbort(
          `wal-fetch ${file}: ${errorMessage(err)}`,
          (err as OperatorError).hint ?? 'fix the settings',
          err,
        );
      }
      // the identity is read only if an encrypted object is met; a missing or wrong one aborts recovery
      const ws = {
        storage,
        sysid,
        signer,
        segmentBytes: await segmentBytesOf(dataDir),
        identityFile: loaded.config.backup.encryption.identityFile,
      };
      const r = await resolveWal(ws, file);
      if (r.kind === 'missing') {
        logger.debug({ job: 'wal-fetch', file, why: r.why }, 'not in the store');
        exitNotStored();
        return;
      }
      await writeAtomically(path, r.content).catch((err: unknown) => {
        throw recoveryAbort(
          `wal-fetch: cannot write ${path}: ${errorMessage(err)}`,
          'check the data directory’s permissions and free space',
          err,
        );
      });
      logger.debug({ job: 'wal-fetch', file, key: r.from }, 'WAL file restored');
    } finally {
      storage.close();
    }
  });
}
