// A base backup's tar is hostile until verified: a member that is not a regular file or a directory
// (a symlink `recovery.signal -> /tmp/victim`, a FIFO), or a path outside the data directory, makes
// `pitr restore` (run as root) fail with the member named, before tar writes it and before anything
// is written through it.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BASE_MANIFEST_SUFFIX } from '../../src/pitr/store-keys.js';
import { CraftedPitrStore, DAY, SYSID } from '../support/crafted-pitr.js';
import { runCli } from '../support/daemon.js';
import { tempDir, tempPath } from '../support/temp.js';

/** A store whose one base backup's data object is the tar.gz of `src` (tar run with `tarArgs`). */
async function storeWith(src: string, tarArgs: string[] = ['.']): Promise<CraftedPitrStore> {
  const store = new CraftedPitrStore();
  const at = new Date(Date.now() - DAY);
  await store.segments(1, 1, 4, () => at);
  const { key, manifest } = await store.base({ consistentAt: at, startSeg: 2, stopSeg: 2 });
  const tgz = execFileSync('tar', ['-czf', '-', '-C', src, ...tarArgs], { maxBuffer: 1 << 26 });
  writeFileSync(join(store.dir, key), tgz);
  const raw = execFileSync('gzip', ['-dc'], { input: tgz, maxBuffer: 1 << 26 });
  const crafted = {
    ...manifest,
    size: tgz.length,
    sha256: createHash('sha256').update(tgz).digest('hex'),
    rawBytes: raw.length,
  };
  writeFileSync(join(store.dir, key + BASE_MANIFEST_SUFFIX), JSON.stringify(crafted));
  return store;
}

function restore(store: CraftedPitrStore, dir: string) {
  return runCli(['pitr', 'restore', '--data-dir', dir, '--latest', '--system-identifier', SYSID], {
    BACKUP_DIR: store.dir,
  });
}

describe('pitr restore of a hostile base backup', () => {
  it('refuses a symlink (recovery.signal -> a victim) and leaves the victim untouched', async () => {
    const victim = join(tempDir('hostile-victim-'), 'victim');
    writeFileSync(victim, 'precious\n', { mode: 0o600 });
    const src = tempDir('hostile-src-');
    writeFileSync(join(src, 'PG_VERSION'), '15\n');
    symlinkSync(victim, join(src, 'recovery.signal'));
    const dir = tempPath('hostile-data-');
    const r = await restore(await storeWith(src), dir);
    expect(r.code, r.out).not.toBe(0);
    expect(r.out).toContain('recovery.signal');
    expect(r.out).toContain('symbolic link');
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(lstatSync(victim).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dir, 'recovery.signal'))).toBe(false);
  }, 120_000);

  it('refuses a FIFO and an absolute path', async () => {
    const fifoSrc = tempDir('hostile-fifo-');
    writeFileSync(join(fifoSrc, 'PG_VERSION'), '15\n');
    execFileSync('mkfifo', [join(fifoSrc, 'pipe')]);
    const fifo = await restore(await storeWith(fifoSrc), tempPath('hostile-data-'));
    expect(fifo.code, fifo.out).not.toBe(0);
    expect(fifo.out).toContain('FIFO');

    const absSrc = tempDir('hostile-abs-');
    mkdirSync(join(absSrc, 'etc'));
    const outside = join(absSrc, 'etc', 'planted');
    writeFileSync(outside, 'x\n');
    const abs = await restore(await storeWith(absSrc, ['-P', outside]), tempPath('hostile-data-'));
    expect(abs.code, abs.out).not.toBe(0);
    expect(abs.out).toContain('only relative paths');
  }, 120_000);
});
