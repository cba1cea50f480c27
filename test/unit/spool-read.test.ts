// The spool uploader reads what pg_receivewal writes into a directory others may write to: never a
// file a symbolic link points at, never more than a WAL file can hold.
import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { FsStorage } from '../../src/backup/storage/fs.js';
import type { Logger } from '../../src/log/logger.js';
import { SpoolUploader } from '../../src/pitr/spool-uploader.js';
import { tempDir } from '../support/temp.js';

const MIB = 1 << 20;

function uploader() {
  const spoolDir = tempDir('spool-read-');
  const storeDir = tempDir('spool-store-');
  const storage = new FsStorage(storeDir);
  const up = new SpoolUploader({
    spoolDir,
    partialIntervalMs: 1000,
    logger: pino({ level: 'silent' }) as unknown as Logger,
    target: () => ({ ws: { storage, sysid: '7000000000000000003' }, segmentBytes: MIB }),
  });
  return { spoolDir, storeDir, up };
}

describe('spool uploader reads', () => {
  it('refuses a history file that is a symbolic link, or larger than 1 MiB', async () => {
    const a = uploader();
    const secret = join(tempDir('spool-secret-'), 'secret');
    writeFileSync(secret, '1\t0/3000000\tsecret\n');
    symlinkSync(secret, join(a.spoolDir, '00000002.history'));
    await expect(a.up.pass()).rejects.toThrow(/ELOOP|symbolic/);
    const b = uploader();
    writeFileSync(join(b.spoolDir, '00000002.history'), Buffer.alloc(2 * MIB, 0x31));
    await expect(b.up.pass()).rejects.toThrow(/more than a WAL file holds/);
    for (const u of [a, b]) {
      mkdirSync(u.storeDir, { recursive: true });
      expect(readdirSync(u.storeDir, { recursive: true }).filter((f) => String(f).endsWith('.gz'))).toEqual(
        [],
      );
    }
  });
});
