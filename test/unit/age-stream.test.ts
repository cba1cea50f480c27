// The fast age payload (node:crypto's ChaCha20-Poly1305) against the reference client: whatever the
// input's size against the 64 KiB chunk (empty, short, exact multiples, one byte over), `age -d`
// and decryptStream read back exactly the input, and a flipped byte is refused.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { ageEncrypter } from '../../src/backup/age-stream.js';
import { decryptStream, isAgeEncrypted, readIdentities } from '../../src/backup/encryption.js';
import { ageKeyPair } from '../support/age-keys.js';
import { tempDir } from '../support/temp.js';

async function encrypt(plain: Buffer, recipients: string[], pieces = 7): Promise<Buffer> {
  // fed in uneven pieces, as gzip hands them on
  const parts: Buffer[] = [];
  for (let off = 0, i = 1; off < plain.length; i++) {
    const n = Math.min(plain.length - off, Math.ceil(plain.length / pieces) + i * 13);
    parts.push(plain.subarray(off, off + n));
    off += n;
  }
  return buffer(Readable.from(parts).pipe(await ageEncrypter(recipients)));
}

describe('age stream encrypter', () => {
  const dir = tempDir('age-stream-');
  const alice = ageKeyPair(dir, 'alice.txt');
  const bob = ageKeyPair(dir, 'bob.txt');
  const K = 64 * 1024;

  it.each([0, 1, K - 1, K, K + 1, 2 * K, 3 * K + 12345])(
    '%i bytes: `age -d` and decryptStream read them back',
    async (size) => {
      const plain = randomBytes(size);
      const enc = await encrypt(plain, [alice.recipient, bob.recipient]);
      expect(isAgeEncrypted(enc)).toBe(true);
      const file = join(dir, `x-${size}.age`);
      writeFileSync(file, enc);
      for (const who of [alice, bob])
        expect(execFileSync('age', ['-d', '-i', who.file, file]).equals(plain)).toBe(true);
      const out = await buffer(await decryptStream(Readable.from([enc]), readIdentities(bob.file), 'x'));
      expect(out.equals(plain)).toBe(true);
    },
  );

  it('a flipped byte of the payload or a cut tail is refused by `age -d`', async () => {
    const plain = randomBytes(3 * K);
    const enc = await encrypt(plain, [alice.recipient]);
    const flipped = Buffer.from(enc);
    flipped[flipped.length - 100]! ^= 1;
    const cut = enc.subarray(0, enc.length - K / 2);
    for (const [name, bad] of [
      ['flipped', flipped],
      ['cut', cut],
    ] as const) {
      const file = join(dir, `bad-${name}.age`);
      writeFileSync(file, bad);
      expect(() => execFileSync('age', ['-d', '-i', alice.file, file], { stdio: 'pipe' })).toThrow();
    }
    expect(readFileSync(join(dir, 'bad-cut.age')).length).toBeLessThan(enc.length);
  });

  it('two encryptions of the same input differ (fresh file key and nonce)', async () => {
    const plain = Buffer.from('same');
    const a = await encrypt(plain, [alice.recipient]);
    const b = await encrypt(plain, [alice.recipient]);
    expect(a.equals(b)).toBe(false);
  });
});
