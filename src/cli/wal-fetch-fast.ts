/**
 * restore_command's fast path: PostgreSQL runs `wal-fetch` once per WAL file, and loading the whole
 * CLI takes a second. While a `pitr restore --start` serves the data directory, the file is ready (or
 * its answer is), and nothing but the file system is needed. Anything else goes to the full command.
 */
import { OperatorError } from '../core/errors.js';
import { fetchViaPrefetch } from '../pitr/prefetch-client.js';

/**
 * Ends `wal-fetch` with "not in the store" (exit 1). bin/pg-maintd.js turns every other exit but 0
 * into 255, so an exit 1 from a crash never passes for the end of the archive.
 */
export function exitNotStored(): void {
  (globalThis as Record<symbol, unknown>)[Symbol.for('pg-maintd.wal-fetch.not-stored')] = true;
  process.exitCode = 1;
}

/** Whether it handled the command (process.exitCode set); false: run the full CLI. */
export async function fastWalFetch(argv: string[]): Promise<boolean> {
  const [cmd, file, path, ...rest] = argv.slice(2);
  if (cmd !== 'wal-fetch' || !file || !path || file.startsWith('-') || path.startsWith('-')) return false;
  let dataDir = process.cwd();
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] === '--data-dir' && rest[i + 1]) dataDir = rest[i + 1]!;
    else if (rest[i] !== '--config' || !rest[i + 1]) return false;
  }
  try {
    const answer = await fetchViaPrefetch(dataDir, file, path);
    if (answer === 'inactive') return false;
    if (answer === 'done') process.exitCode = 0;
    else exitNotStored();
  } catch (err) {
    if (!(err instanceof OperatorError)) return false;
    process.stderr.write(`pg-maintd: ${err.describe()}\n`);
    process.exitCode = err.exitCode;
  }
  return true;
}
