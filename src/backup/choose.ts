/**
 * Which backup a restore or a drill takes: the one named by its key, or the newest trusted one of a
 * database (not misdated, and with BACKUP_SIGNING_KEY_FILE signed), from the cluster backed up
 * and not another one writing into the same prefix.
 */
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import { trusted, type Catalog, type GoodBackup } from './catalog.js';
import { v2 } from './manifest.js';
import { parseDataKey, printable } from './naming.js';

export interface ChoiceOptions {
  /** Take a backup whose signature is missing or wrong (BACKUP_SIGNING_KEY_FILE is set): an explicit choice. */
  allowUnsigned?: boolean;
  /** The system identifier of the cluster backed up (DATABASE_URL's), if it could be read. */
  sourceCluster?: string | undefined;
  /** For the newest backup: take it even when another cluster wrote it. */
  allowOtherCluster?: boolean;
}

export async function resolveBackup(
  catalog: Catalog,
  key: string | undefined,
  database: string | undefined,
  choice: ChoiceOptions = {},
  log?: Logger,
): Promise<GoodBackup> {
  if (key) {
    const found = await catalog.find(key, { acceptUnsigned: choice.allowUnsigned === true });
    if (typeof found === 'string') {
      const signature = /^signature|signed with a key/.test(found);
      throw new OperatorError(`cannot restore ${printable(key)}: ${found}`, {
        hint: signature
          ? 'restore a signed backup (`pg-maintd backups list`); to restore this one all the same, knowing it may have been altered, pass --allow-unsigned'
          : 'pick a good backup from `pg-maintd backups list`; objects without a manifest are incomplete and never restored',
        // a malformed --key is a usage error; an object that is not a good backup is bad data
        exitCode: parseDataKey(key) ? EXIT.DATAERR : EXIT.USAGE,
      });
    }
    if (found.unsigned)
      log?.warn(
        { key, why: found.unsigned },
        'restoring a backup whose signature does not check (--allow-unsigned)',
      );
    if (found.suspect)
      log?.warn({ key, why: found.suspect.detail }, 'restoring a misdated backup, as asked by its key');
    return found;
  }
  if (!database)
    throw new OperatorError('restore needs --key KEY, or --latest with --database DB', {
      exitCode: EXIT.USAGE,
    });
  const listing = await catalog.list(database);
  const good = trusted(listing);
  const latest = good[0];
  if (!latest) {
    const future = listing.good.length;
    throw new OperatorError(
      `no good backup of database "${printable(database)}" in ${catalog.storage.description}`,
      {
        hint: future
          ? `${future} backup(s) are dated in the future and not trusted as the latest (see \`pg-maintd backups list\`): fix the clock of the host that wrote them, or restore one by --key`
          : 'run `pg-maintd backup` first',
      },
    );
  }
  checkCluster(latest, good, database, choice);
  return latest;
}

/** The newest backup must come from the cluster backed up, not another one writing to the same prefix. */
function checkCluster(latest: GoodBackup, good: GoodBackup[], database: string, choice: ChoiceOptions): void {
  if (choice.allowOtherCluster) return;
  const id = (g: GoodBackup) => v2(g.manifest)?.systemIdentifier;
  const fix =
    'give each cluster its own S3_PREFIX or BACKUP_DIR; to take it anyway pass --allow-other-cluster, or choose a backup with --key';
  if (choice.sourceCluster !== undefined) {
    const theirs = id(latest);
    if (theirs === undefined || theirs === choice.sourceCluster) return;
    const ours = good.find((g) => id(g) === choice.sourceCluster);
    throw new OperatorError(
      `the newest backup of "${printable(database)}" (${latest.key}) comes from another cluster (system identifier ${theirs}) than the one DATABASE_URL points at (${choice.sourceCluster}): another cluster writes into the same prefix`,
      { hint: `${fix}${ours ? ` (the newest of this cluster: ${ours.key})` : ''}`, exitCode: EXIT.DATAERR },
    );
  }
  const clusters = new Set(good.map(id).filter((x) => x !== undefined));
  if (clusters.size > 1)
    throw new OperatorError(
      `the backups of "${printable(database)}" come from ${clusters.size} clusters (${[...clusters].join(', ')}) and the cluster of DATABASE_URL cannot be reached to tell which is its own`,
      { hint: fix, exitCode: EXIT.DATAERR },
    );
}
