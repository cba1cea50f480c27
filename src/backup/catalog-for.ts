/** The catalog as configured: the signing keys (if any) and the clock tolerance it judges dates by. */
import type { Config } from '../config/load.js';
import { readSigningKeys } from './key-file.js';
import { Catalog } from './catalog.js';
import { Signer } from './signing.js';
import type { Storage } from './storage/storage.js';

export function catalogFor(config: Config, storage: Storage): Catalog {
  const file = config.backup.signingKeyFile;
  return new Catalog(storage, {
    signer: file ? new Signer(readSigningKeys(file)) : undefined,
    clockToleranceMs: config.backup.clockSkewToleranceMs,
  });
}
