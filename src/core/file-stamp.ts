/** What tells a changed file apart (a Secret or cert-manager swaps in a new inode): checked, never read. */
import { statSync } from 'node:fs';

export function fileStamp(path: string): string {
  try {
    const s = statSync(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return 'missing';
  }
}
