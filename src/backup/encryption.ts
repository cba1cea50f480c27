/**
 * Client-side encryption in the age format (age-encryption.org/v1), so that a stored object is read
 * with the standard tool: `age -d -i key.txt X.gz.age | gunzip`. Objects are encrypted after
 * compression to BACKUP_ENCRYPTION_RECIPIENTS (public keys only: the daemon that writes backups holds
 * no secret) and decrypted with BACKUP_ENCRYPTION_IDENTITY_FILE where backups are read.
 *
 * The recipients file is read again at every use, so a rotation needs no restart; a file that has
 * become unreadable or empty stops the backup, never turns encryption off. Nothing here ever puts a
 * line of the identity file into a message.
 */
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { Decrypter, Encrypter, identityToRecipient } from 'age-encryption';
import { ageEncrypter } from './age-stream.js';
import { AGE_RECIPIENT, splitAgeRecipients } from '../config/kinds.js';
import { recipientsTextProblem } from '../config/load.js';
import type { Config } from '../config/load.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

/** Every age file begins with this line. */
export const AGE_MAGIC = 'age-encryption.org/v1\n';
/** The suffix an encrypted object's key carries after its compression suffix. */
export const AGE_SUFFIX = '.age';

/** Whether `head` (the first bytes of an object) is an age file. */
export function isAgeEncrypted(head: Uint8Array): boolean {
  return Buffer.from(head.subarray(0, AGE_MAGIC.length)).toString('latin1') === AGE_MAGIC;
}

/**
 * The recipients objects are encrypted to now (BACKUP_ENCRYPTION_RECIPIENTS, then the file's), or
 * an empty list when encryption is not configured. Throws when the file is configured but unusable.
 */
export function encryptionRecipients(config: Pick<Config, 'backup'>): string[] {
  const e = config.backup.encryption;
  const list = [...(e.recipients ?? [])];
  if (e.recipientsFile) {
    // read once: what is checked is what is used (a file emptied between two reads gave no recipients,
    // and the object went out plain)
    let text: string;
    let why: string | undefined;
    try {
      text = readFileSync(e.recipientsFile, 'utf8');
      why = recipientsTextProblem(text);
    } catch (err) {
      text = '';
      why = `cannot read it: ${(err as NodeJS.ErrnoException).code ?? 'error'}`;
    }
    if (why)
      throw new OperatorError(
        `BACKUP_ENCRYPTION_RECIPIENTS_FILE ${e.recipientsFile} cannot be used: ${why}; nothing is stored unencrypted in its place`,
        {
          exitCode: EXIT.CONFIG,
          hint: 'put one age public key (age1..., from `age-keygen -y`) per line in the file',
        },
      );
    list.push(...splitAgeRecipients(text));
  }
  for (const r of list) {
    if (!AGE_RECIPIENT.test(r))
      throw new OperatorError('an age recipient is malformed', {
        exitCode: EXIT.CONFIG,
        hint: 'give age public keys (age1...) in BACKUP_ENCRYPTION_RECIPIENTS',
      });
  }
  return [...new Set(list)];
}

/** Checks that every recipient parses (the bech32 checksum too): an Encrypter refuses a bad one. */
export function checkRecipients(recipients: string[]): void {
  const enc = new Encrypter();
  recipients.forEach((r, i) => {
    try {
      enc.addRecipient(r);
    } catch {
      throw new OperatorError(`age recipient ${i + 1} (${r.slice(0, 12)}…) is not a valid age public key`, {
        exitCode: EXIT.CONFIG,
        hint: 'copy the public key again from `age-keygen -y key.txt`',
      });
    }
  });
}

/**
 * `body` encrypted to `recipients`, as a stream (age's STREAM payload, 64 KiB chunks), sealed by
 * node:crypto (age-stream.ts): the pure-JavaScript cipher was slower than gzip's output.
 */
export async function encryptStream(body: Readable, recipients: string[]): Promise<Readable> {
  const enc = await ageEncrypter(recipients);
  body.on('error', (err) => enc.destroy(err));
  return body.pipe(enc);
}

/** A whole small object (a WAL segment, compressed) encrypted to `recipients`. */
export async function encryptBuffer(content: Uint8Array, recipients: string[]): Promise<Buffer> {
  const enc = await ageEncrypter(recipients);
  const chunks: Buffer[] = [];
  enc.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    enc.on('end', resolve);
    enc.on('error', reject);
  });
  enc.end(content);
  await done;
  return Buffer.concat(chunks);
}

/**
 * No identity here opens the object: BACKUP_ENCRYPTION_IDENTITY_FILE unset, unreadable, keyless, or
 * of other recipients. The host's problem, not the object's: a drill says so and records nothing.
 */
export class IdentityError extends OperatorError {}

/** The identities of an age identity file; the error names the file, never a line of it. */
export function readIdentities(file: string | undefined): string[] {
  if (!file)
    throw new IdentityError('this backup is encrypted and BACKUP_ENCRYPTION_IDENTITY_FILE is not set', {
      exitCode: EXIT.CONFIG,
      hint: 'set BACKUP_ENCRYPTION_IDENTITY_FILE to the age identity file whose public key the backups were encrypted to',
    });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new IdentityError(
      `cannot read BACKUP_ENCRYPTION_IDENTITY_FILE ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`,
      { exitCode: EXIT.CONFIG, hint: 'make the file readable by the user pg-maintd runs as' },
    );
  }
  const ids = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^AGE-SECRET-KEY-(?:PQ-)?1[0-9A-Z]+$/.test(l));
  if (ids.length === 0)
    throw new IdentityError(
      `BACKUP_ENCRYPTION_IDENTITY_FILE ${file} holds no age identity (AGE-SECRET-KEY-1...)`,
      {
        exitCode: EXIT.CONFIG,
        hint: 'give the file `age-keygen -o` wrote',
      },
    );
  return ids;
}

/** The public keys of `identities`, for messages (which never show an identity). */
export async function publicKeysOf(identities: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const id of identities) out.push(await identityToRecipient(id).catch(() => '(unreadable identity)'));
  return out;
}

/**
 * `body` decrypted with `identities`. `encryptedTo` (from the manifest, when there is one) names the
 * recipients in the error when no identity matches; `what` names the object.
 */
export async function decryptStream(
  body: Readable,
  identities: string[],
  what: string,
  encryptedTo?: string[],
): Promise<Readable> {
  const dec = new Decrypter();
  for (const id of identities) dec.addIdentity(id);
  const web = Readable.toWeb(body) as unknown as ReadableStream<Uint8Array>;
  try {
    const out = await dec.decrypt(web);
    return Readable.fromWeb(out as unknown as import('node:stream/web').ReadableStream<Uint8Array>);
  } catch (err) {
    body.destroy();
    throw await decryptError(err, identities, what, encryptedTo);
  }
}

/** A whole small object decrypted with `identities`. */
export async function decryptBuffer(
  content: Uint8Array,
  identities: string[],
  what: string,
  encryptedTo?: string[],
): Promise<Buffer> {
  const dec = new Decrypter();
  for (const id of identities) dec.addIdentity(id);
  try {
    return Buffer.from(await dec.decrypt(content));
  } catch (err) {
    throw await decryptError(err, identities, what, encryptedTo);
  }
}

async function decryptError(
  err: unknown,
  identities: string[],
  what: string,
  encryptedTo: string[] | undefined,
): Promise<OperatorError> {
  const message = errorMessage(err);
  if (/no identity matched/i.test(message)) {
    const ours = await publicKeysOf(identities);
    return new IdentityError(
      `${what} is encrypted to ${encryptedTo?.length ? encryptedTo.join(', ') : 'a recipient not recorded with it'}, and no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches (it holds the keys of ${ours.join(', ')})`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'set BACKUP_ENCRYPTION_IDENTITY_FILE to the identity of one of those recipients; nothing was written',
      },
    );
  }
  return new OperatorError(`${what} cannot be decrypted: ${message}`, {
    exitCode: EXIT.DATAERR,
    hint: 'the object is damaged or was altered; restore another one',
    cause: err,
  });
}
