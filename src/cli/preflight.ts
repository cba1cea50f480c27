/**
 * The preflight: after the configuration has loaded (every value parsed and cross-checked), the
 * files whose paths are settings and whose contents are not are read and checked, before any command
 * acts on them: the signing key file, the age recipients (each must parse, checksum included) and
 * identity file, and the web config and bearer token files. A problem is a ConfigError, as for a
 * value, with exit 78. The signing keys and age identities join the secrets the log is scrubbed of.
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { checkRecipients, encryptionRecipients, readIdentities } from '../backup/encryption.js';
import { readSigningKeys } from '../backup/key-file.js';
import { FIELDS, type FieldName } from '../config/fields.js';
import { ConfigError, withOrigins, type LoadedConfig, type Problem } from '../config/load.js';
import { readWebSettings } from '../http/web-config.js';
import { errorMessage } from '../core/errors.js';

/** The loaded configuration once the files it names are usable; throws a ConfigError otherwise. */
export function preflight(loaded: LoadedConfig): LoadedConfig {
  const problems: Problem[] = [];
  const signingKeys = readKeyFile(loaded, problems);
  checkEncryptionRecipients(loaded, problems);
  const identities = readIdentityFile(loaded, problems);
  // the files the web settings name are read once everything else is usable
  if (problems.length === 0) problems.push(...readWebSettings(loaded.config.http.web).problems);
  if (problems.length > 0) throw new ConfigError(withOrigins(problems, loaded.origins));
  if (signingKeys.length === 0 && identities.length === 0) return loaded;
  return {
    ...loaded,
    warnings: [...loaded.warnings, ...identityFileWarnings(loaded, identities)],
    secrets: [...loaded.secrets, ...signingKeys.map((k) => k.toString('utf8')), ...identities],
  };
}

/** Every age recipient must be a key age accepts (the loader checked only their shape). */
function checkEncryptionRecipients(loaded: LoadedConfig, problems: Problem[]): void {
  const e = loaded.config.backup.encryption;
  if (!e.recipients?.length && !e.recipientsFile) return;
  const field =
    e.recipientsFile && !e.recipients?.length
      ? 'BACKUP_ENCRYPTION_RECIPIENTS_FILE'
      : 'BACKUP_ENCRYPTION_RECIPIENTS';
  try {
    checkRecipients(encryptionRecipients(loaded.config));
  } catch (err) {
    problems.push({
      field,
      origin: loaded.origins[field],
      // public keys and a path: safe to show
      given: field === 'BACKUP_ENCRYPTION_RECIPIENTS_FILE' ? e.recipientsFile : e.recipients?.join(','),
      allowed: `${FIELDS[field].allowed} (${errorMessage(err)})`,
    });
  }
}

/** BACKUP_ENCRYPTION_IDENTITY_FILE, when set, must be readable and hold an identity; the identities, to scrub. */
function readIdentityFile(loaded: LoadedConfig, problems: Problem[]): string[] {
  const file = loaded.config.backup.encryption.identityFile;
  if (file === undefined) return [];
  try {
    return readIdentities(file);
  } catch (err) {
    problems.push({
      field: 'BACKUP_ENCRYPTION_IDENTITY_FILE',
      origin: loaded.origins.BACKUP_ENCRYPTION_IDENTITY_FILE,
      given: file,
      allowed: `${FIELDS.BACKUP_ENCRYPTION_IDENTITY_FILE.allowed} (${errorMessage(err)})`,
    });
    return [];
  }
}

/**
 * An identity file others may read hands them every encrypted backup: said, not refused (a
 * Kubernetes secret is mounted 0644 by default, readable only inside its container).
 */
function identityFileWarnings(loaded: LoadedConfig, identities: string[]): string[] {
  const file = loaded.config.backup.encryption.identityFile;
  if (file === undefined || identities.length === 0 || process.platform === 'win32') return [];
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return [];
  }
  if ((mode & 0o077) === 0) return [];
  return [
    `BACKUP_ENCRYPTION_IDENTITY_FILE ${file} may be read by group or others (mode ${(mode & 0o777).toString(8)}): whoever reads it decrypts every backup; chmod 600 ${file} (owned by the user pg-maintd runs as)`,
  ];
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
