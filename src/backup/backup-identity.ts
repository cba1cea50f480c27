/**
 * Reading an encrypted dump: which identities open it, checked before anything touches a target
 * (restore) or a scratch database (drill), and the compressed bytes of the stored object. The manifest
 * says whether the object is encrypted and to whom; a plain backup needs no identity, so plain and
 * encrypted backups sit side by side after a key rotation and each takes its own path.
 */
import type { Readable } from 'node:stream';
import type { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { GoodBackup } from './catalog.js';
import { IdentityError, decryptStream, publicKeysOf, readIdentities } from './encryption.js';
import { encryptionOf, type Encryption } from './manifest.js';
import { printable } from './naming.js';

export interface BackupReader {
  /** The identities that open the backup; undefined for a plain one. */
  identities: string[] | undefined;
  /** The compressed bytes of `stored` (the object as stored): decrypted when the backup is encrypted. */
  compressed(stored: Readable): Promise<Readable>;
}

/**
 * The reader of `backup`, once BACKUP_ENCRYPTION_IDENTITY_FILE holds an identity of one of the
 * recipients the manifest names. Throws an OperatorError naming those recipients otherwise; the
 * object's own header is checked again when it is opened (the manifest could lie).
 */
export function backupReader(backup: GoodBackup, identityFile: string | undefined): Promise<BackupReader> {
  return storedReader(`backup ${printable(backup.key)}`, encryptionOf(backup.manifest), identityFile);
}

/** The same for any stored object whose manifest records `encryption` (the globals too); `what` names it. */
export async function storedReader(
  what: string,
  encryption: Encryption | undefined,
  identityFile: string | undefined,
): Promise<BackupReader> {
  if (!encryption) return { identities: undefined, compressed: (s) => Promise.resolve(s) };
  const to = encryption.recipients.join(', ');
  if (!identityFile)
    throw new IdentityError(
      `${what} is encrypted to ${to}, and BACKUP_ENCRYPTION_IDENTITY_FILE is not set: nothing was restored`,
      {
        exitCode: EXIT.CONFIG,
        hint: 'set BACKUP_ENCRYPTION_IDENTITY_FILE to the age identity file (from age-keygen) of one of those recipients',
      },
    );
  let identities: string[];
  try {
    identities = readIdentities(identityFile);
  } catch (err) {
    const e = err as OperatorError;
    throw new IdentityError(`${what} is encrypted to ${to}; ${e.message}: nothing was restored`, {
      exitCode: e.exitCode,
      ...(e.hint ? { hint: e.hint } : {}),
    });
  }
  const ours = await publicKeysOf(identities);
  if (!ours.some((k) => encryption.recipients.includes(k)))
    throw new IdentityError(
      `${what} is encrypted to ${to}, and no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches (it holds the keys of ${ours.join(', ')}): nothing was restored`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'set BACKUP_ENCRYPTION_IDENTITY_FILE to the identity of one of those recipients (after a key rotation, older backups still need the old identity)',
      },
    );
  return {
    identities,
    compressed: (stored) => decryptStream(stored, identities, what, encryption.recipients),
  };
}
