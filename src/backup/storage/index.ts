import type { Config } from '../../config/load.js';
import { FsStorage } from './fs.js';
import type { Storage } from './storage.js';

export type { Storage, StoredObject } from './storage.js';

/**
 * S3 when S3_BUCKET is set, else the local BACKUP_DIR (the embedded default). The AWS SDK is loaded
 * only for S3: it costs about 25 MB of memory that a local-directory setup does not need.
 */
export async function createStorage(
  config: Config,
  opts: { notice?: (message: string) => void } = {},
): Promise<Storage> {
  const s3 = config.s3;
  if (!s3.bucket) return new FsStorage(config.backup.dir);
  const { S3Storage } = await import('./s3.js');
  const storage = new S3Storage({ ...s3, bucket: s3.bucket });
  // what the store turns out not to do (conditional writes, Object Lock that cannot be confirmed)
  storage.onNotice = opts.notice;
  return storage;
}
