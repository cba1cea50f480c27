// The age format against the reference client (Debian's `age` and `age-keygen`): what pg-maintd
// encrypts, age decrypts, and the other way round; a wrong or missing identity is a clear error.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import {
  checkRecipients,
  decryptBuffer,
  decryptStream,
  encryptBuffer,
  encryptStream,
  encryptionRecipients,
  isAgeEncrypted,
  readIdentities,
} from '../../src/backup/encryption.js';
import { tempDir } from '../support/temp.js';

function keyPair(dir: string, name: string): { file: string; recipient: string; secret: string } {
  const file = join(dir, name);
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
  const recipient = execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim();
  const secret = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('AGE-SECRET-KEY-'))!;
  return { file, recipient, secret };
}

describe('age encryption', () => {
  const dir = tempDir('age-');
  const alice = keyPair(dir, 'alice.txt');
  const bob = keyPair(dir, 'bob.txt');
  // more than one 64 KiB chunk, not a multiple of it
  const plain = randomBytes(300_001);

  it('writes what `age -d` reads, to every recipient', async () => {
    const enc = await buffer(await encryptStream(Readable.from([plain]), [alice.recipient, bob.recipient]));
    expect(isAgeEncrypted(enc)).toBe(true);
    const file = join(dir, 'x.age');
    writeFileSync(file, enc);
    for (const who of [alice, bob])
      expect(execFileSync('age', ['-d', '-i', who.file, file]).equals(plain)).toBe(true);
  });

  it('reads what `age -r` wrote', async () => {
    const file = join(dir, 'plain');
    writeFileSync(file, plain);
    const enc = execFileSync('age', ['-r', alice.recipient, file]);
    const out = await buffer(await decryptStream(Readable.from([enc]), readIdentities(alice.file), 'x'));
    expect(out.equals(plain)).toBe(true);
    const small = await encryptBuffer(Buffer.from('hello'), [bob.recipient]);
    expect((await decryptBuffer(small, [bob.secret], 'small')).toString()).toBe('hello');
  });

  it('names the recipients when no identity matches, and never the identity', async () => {
    const enc = await encryptBuffer(plain, [alice.recipient]);
    const err = await decryptStream(Readable.from([enc]), [bob.secret], 'the dump db/x.sql.gz.age', [
      alice.recipient,
    ]).catch((e: Error & { hint?: string }) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(alice.recipient);
    expect((err as Error).message).toContain(bob.recipient);
    expect((err as Error).message).not.toContain(bob.secret.slice(16));
  });

  it('refuses altered ciphertext', async () => {
    const enc = await encryptBuffer(plain, [alice.recipient]);
    enc[enc.length - 100]! ^= 1;
    const stream = await decryptStream(Readable.from([enc]), [alice.secret], 'x');
    await expect(buffer(stream)).rejects.toThrow();
  });

  it('says what is wrong with an identity file, quoting none of it', () => {
    const junk = join(dir, 'junk.txt');
    writeFileSync(junk, 'AGE-SECRET-KEY-NOT-REALLY\nsomething secret\n');
    expect(() => readIdentities(junk)).toThrow(/holds no age identity/);
    try {
      readIdentities(junk);
    } catch (e) {
      expect((e as Error).message).not.toContain('something secret');
    }
    expect(() => readIdentities(join(dir, 'missing.txt'))).toThrow(/cannot read .*ENOENT/);
    expect(() => readIdentities(undefined)).toThrow(/BACKUP_ENCRYPTION_IDENTITY_FILE is not set/);
  });

  it('checks a recipient with its checksum', () => {
    expect(() => checkRecipients([alice.recipient])).not.toThrow();
    const broken = alice.recipient.slice(0, -1) + (alice.recipient.endsWith('q') ? 'p' : 'q');
    expect(() => checkRecipients([broken])).toThrow(/not a valid age public key/);
  });
});

describe('the recipients file', () => {
  it('is read once per object: one emptied between two reads never yields no recipients (plaintext)', () => {
    const dir = tempDir('age-recipients-');
    const { recipient } = keyPair(dir, 'k.txt');
    // a FIFO hands each read what one writer wrote: the key, then nothing (an editor truncating it)
    const fifo = join(dir, 'recipients');
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', 'printf "%s\\n" "$KEY" > "$F"; : > "$F"'], {
      env: { ...process.env, KEY: recipient, F: fifo },
      stdio: 'ignore',
    });
    try {
      const config = { backup: { encryption: { recipientsFile: fifo } } } as Parameters<
        typeof encryptionRecipients
      >[0];
      expect(encryptionRecipients(config)).toEqual([recipient]);
    } finally {
      writer.kill('SIGKILL');
    }
  });
});
