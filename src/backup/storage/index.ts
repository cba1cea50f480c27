import type { Config } from '../../config/load.js';
import { FsStorage } from './fs.js';
import { S3Storage } from './s3.js';
import type { Storage } from './storage.js';

export type { Storage, StoredObject } from './storage.js';

/** S3 when S3_BUCKET is set, else the local BACKUP_DIR (the embedded default). */
export function createStorage(config: Config): Storage {
  const s3 = config.s3;
  if (s3.bucket) return new S3Storage({ ...s3, bucket: s3.bucket });
  return new FsStorage(config.backup.dir);
}
