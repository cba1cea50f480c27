/**
 * Immutable files (chattr +i), the directory store's lock: unlink(2) of one fails with EPERM, even
 * for root. Only some file systems allow the flag (ext4, xfs, btrfs; not tmpfs or overlayfs), so a
 * test asks first and skips, printing why, where it cannot.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';

/** Why files in `dir` cannot be made immutable here, or undefined when they can. */
export function immutableUnsupported(dir: string): string | undefined {
  const probe = join(dir, '.chattr-probe');
  writeFileSync(probe, '');
  try {
    execFileSync('chattr', ['+i', probe], { stdio: 'pipe' });
  } catch (err) {
    rmSync(probe, { force: true });
    const stderr = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim();
    return `chattr +i is not possible in ${dir} (${stderr || 'chattr failed'}): its file system (tmpfs, overlay?) or this user does not allow it`;
  }
  try {
    unlinkSync(probe);
    return `an immutable file in ${dir} could be deleted: the file system ignores the flag`;
  } catch {
    return undefined; // refused, as it should be
  } finally {
    execFileSync('chattr', ['-i', probe], { stdio: 'pipe' });
    rmSync(probe, { force: true });
  }
}

/** Makes files immutable; they are made mutable again when the test ends, whatever happens. */
export function makeImmutable(...paths: string[]): () => void {
  const undo = () => {
    for (const p of paths)
      try {
        execFileSync('chattr', ['-i', p], { stdio: 'pipe' });
      } catch {
        // already gone or never set
      }
  };
  onTestFinished(undo);
  execFileSync('chattr', ['+i', ...paths], { stdio: 'pipe' });
  return undo;
}
