/**
 * Temporary folders and files of tests, removed when the test that made them ends or, made outside a
 * test (at the top of a file, in beforeAll, in a describe body), when the file ends. Each test file
 * runs with a temp directory of its own (reap.ts) that must be empty again when the file ends:
 * anything left there fails the file, so a leak shows at once and names its file.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';

/** What this file made and has not removed yet. */
const made = new Set<string>();

/** A new folder (mode 0700) in the temp directory, removed with all it holds at the end (see above). */
export function tempDir(prefix = 'pgmaintd-'): string {
  return own(mkdtempSync(join(tmpdir(), prefix)));
}

/** A fresh path in the temp directory, for a file or folder something else may create; removed like tempDir's. */
export function tempPath(prefix = 'pgmaintd-'): string {
  return own(join(tmpdir(), `${prefix}${randomBytes(4).toString('hex')}`));
}

/** Removes everything this file made that is still there (reap.ts, after the file's own afterAll). */
export function removeAllTemp(): void {
  for (const path of [...made]) remove(path);
}

function remove(path: string): void {
  rmSync(path, { recursive: true, force: true, maxRetries: 5 });
  made.delete(path);
}

function own(path: string): string {
  made.add(path);
  try {
    onTestFinished(() => remove(path));
  } catch {
    // not inside a test: removed when the file ends
  }
  return path;
}
