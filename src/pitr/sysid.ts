/**
 * Which cluster's PITR store a command works on: `--system-identifier`, else the cluster of
 * DATABASE_URL when it answers, else the only cluster the store holds.
 */
import type { Storage } from '../backup/storage/storage.js';
import type { Config } from '../config/load.js';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { systemIdentifier, withClusterFact } from '../db/cluster.js';
import type { Logger } from '../log/logger.js';
import { PITR_ROOT, validSystemIdentifier } from './store-keys.js';

export async function resolveSysid(
  storage: Storage,
  config: Config,
  logger: Logger,
  given: string | undefined,
  useDatabase = true,
): Promise<string> {
  if (given !== undefined) {
    if (!validSystemIdentifier(given))
      throw new OperatorError(`--system-identifier ${JSON.stringify(given)} is not a system identifier`, {
        exitCode: EXIT.USAGE,
        hint: 'give the digits `pg-maintd pitr list` or pg_controldata shows',
      });
    return given;
  }
  const fromDb = useDatabase ? await withClusterFact(config.db, logger, systemIdentifier) : undefined;
  if (fromDb) return fromDb;
  const ids = new Set<string>();
  for (const o of await storage.list(`${PITR_ROOT}/`)) {
    const id = o.key.slice(PITR_ROOT.length + 1).split('/')[0]!;
    if (validSystemIdentifier(id)) ids.add(id);
  }
  if (ids.size === 1) return [...ids][0]!;
  throw new OperatorError(
    ids.size === 0
      ? `no point-in-time recovery data in ${storage.description}`
      : `${storage.description} holds PITR data of ${ids.size} clusters (${[...ids].slice(0, 5).join(', ')}) and the database cannot be asked which one is meant`,
    {
      exitCode: EXIT.USAGE,
      hint: ids.size === 0 ? 'check BACKUP_DIR / S3_BUCKET and S3_PREFIX' : 'give --system-identifier',
    },
  );
}
