/**
 * Starts one PostgreSQL server for the whole run; each test file makes its own database in it.
 * Makes the run's temp directory, where each file gets a folder of its own (reap.ts); when the run
 * ends, anything still in it (a file whose worker died before its own check) fails the run, by name.
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startPgServer } from './pg-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
    pgProvider: string;
    /** The run's temp directory: each test file's TMPDIR is a folder in it. */
    tmpRoot: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const tmpRoot = mkdtempSync(join(tmpdir(), 'pgmaintd-run-'));
  chmodSync(tmpRoot, 0o711); // private clusters' servers run as the postgres user, two levels down
  project.provide('tmpRoot', tmpRoot);
  const server = await startPgServer().catch((err: unknown) => {
    rmSync(tmpRoot, { recursive: true, force: true });
    throw err;
  });
  project.provide('pgAdminUrl', server.url);
  project.provide('pgProvider', server.provider);
  return async () => {
    await server.stop();
    // a test file's folder, with what it left inside (a worker that died never ran reap.ts's check)
    const left = readdirSync(tmpRoot, { withFileTypes: true }).flatMap((e) => {
      const inside = e.isDirectory() ? readdirSync(join(tmpRoot, e.name)) : [];
      return inside.length ? inside.map((name) => join(e.name, name)) : [e.name];
    });
    rmSync(tmpRoot, { recursive: true, force: true, maxRetries: 5 });
    if (left.length > 0) {
      // vitest prints an error thrown here but still exits 0: fail the run by its exit code
      process.exitCode = 1;
      console.error(
        `\nFAIL: the run left ${left.length} entr${left.length === 1 ? 'y' : 'ies'} in its temp directory ${tmpRoot} ` +
          `(removed now): ${left.join(', ')}\n`,
      );
    }
  };
}
