// The tar reader a base backup streams through: it keeps the named members as they pass, in any
// chunking, and never changes a byte.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { parseBackupLabel, parsePgManifestEnd } from '../../src/pitr/server-facts.js';
import { TarCapture } from '../../src/pitr/tar-capture.js';
import { tempDir } from '../support/temp.js';

function tarOf(files: Record<string, Buffer | string>): Buffer {
  const dir = tempDir('tar-');
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return execFileSync('tar', ['--format=ustar', '-cf', '-', '-C', dir, ...Object.keys(files)]);
}

async function through(tar: Buffer, chunk: number): Promise<{ out: Buffer; capture: TarCapture }> {
  const parts: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) parts.push(tar.subarray(i, i + chunk));
  const capture = new TarCapture(new Set(['backup_label', 'backup_manifest']));
  const out = await buffer(Readable.from(parts).pipe(capture));
  return { out, capture };
}

describe('TarCapture', () => {
  const label = 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n';
  const manifest = JSON.stringify({
    'WAL-Ranges': [{ Timeline: 1, 'Start-LSN': '0/2000028', 'End-LSN': '0/2000100' }],
  });
  const big = Buffer.alloc(70_000, 7);

  it.each([1, 511, 512, 513, 65_536])(
    'keeps backup_label and backup_manifest in %i-byte chunks',
    async (chunk) => {
      const tar = tarOf({ backup_label: label, PG_VERSION: '15\n', big, backup_manifest: manifest });
      const { out, capture } = await through(tar, chunk);
      expect(out.equals(tar)).toBe(true);
      expect(capture.captured.get('backup_label')?.toString()).toBe(label);
      expect(capture.captured.get('backup_manifest')?.toString()).toBe(manifest);
      expect(capture.captured.has('big')).toBe(false);
    },
  );

  it('fails on a stream that is not a tar', async () => {
    await expect(through(Buffer.alloc(1024, 0x41), 100)).rejects.toThrow(/malformed header/);
  });
});

describe('backup_label and backup_manifest', () => {
  it('read the start position and timeline, and the end of the WAL ranges', () => {
    expect(
      parseBackupLabel('START WAL LOCATION: 1/2000028 (file 000000010000000100000002)\nSTART TIMELINE: 3\n'),
    ).toEqual({
      lsn: 0x1_0200_0028n,
      timeline: 3,
    });
    expect(
      parsePgManifestEnd(
        JSON.stringify({ 'WAL-Ranges': [{ 'End-LSN': '0/10' }, { 'End-LSN': '0/3000050' }] }),
      ),
    ).toBe(0x3000050n);
    expect(() => parseBackupLabel('LABEL: x\n')).toThrow(/start position/);
    expect(() => parsePgManifestEnd('{}')).toThrow(/WAL-Ranges/);
  });
});
