/**
 * The preflight: after the configuration has loaded (every value parsed and cross-checked), the
 * files whose paths are settings and whose contents are not are read and checked, before any command
 * acts on them: the signing key file, and the web config and bearer token files. A problem is a
 * ConfigError, as for a value, with exit 78. The signing keys join the secrets the log is scrubbed of.
 */
import { resolve } from 'node:path';
import { readSigningKeys } from '../backup/key-file.js';
import { FIELDS, type FieldName } from '../config/fields.js';
import { ConfigError, withOrigins, type LoadedConfig, type Problem } from '../config/load.js';
import { readWebSettings } from '../http/web-config.js';
import { errorMessage } from '../core/errors.js';

/** The loaded configuration once the files it names are usable; throws a ConfigError otherwise. */
export function preflight(loaded: LoadedConfig): LoadedConfig {
  const problems: Problem[] = [];
  const signingKeys = readKeyFile(loaded, problems);
  // the files the web settings name are read once everything else is usable
  if (problems.length === 0) problems.push(...readWebSettings(loaded.config.http.web).problems);
  if (problems.length > 0) throw new ConfigError(withOrigins(problems, loaded.origins));
  if (signingKeys.length === 0) return loaded;
  return { ...loaded, secrets: [...loaded.secrets, ...signingKeys.map((k) => k.toString('utf8'))] };
}

/** BACKUP_SIGNING_KEY_FILE must hold usable keys. */
function readKeyFile(loaded: LoadedConfig, problems: Problem[]): Buffer[] {
  const file = setting(loaded, 'BACKUP_SIGNING_KEY_FILE');
  if (file === undefined) return [];
  try {
    return readSigningKeys(resolve(file));
  } catch (err) {
    problems.push({
      field: 'BACKUP_SIGNING_KEY_FILE',
      origin: loaded.origins.BACKUP_SIGNING_KEY_FILE,
      given: file,
      allowed: `${FIELDS.BACKUP_SIGNING_KEY_FILE.allowed} (${errorMessage(err)})`,
    });
    return [];
  }
}

/** A path setting as the configuration parsed it (the loader checked it already), or undefined when unset. */
function setting(loaded: LoadedConfig, field: FieldName): string | undefined {
  const raw = loaded.raw[field];
  return raw === undefined ? undefined : (FIELDS[field].schema.parse(raw) as string | undefined);
}
