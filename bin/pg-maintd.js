#!/usr/bin/env node
// Runnable entry: the compiled CLI lives in dist/ (built by `npm run build`, which `npm ci` runs via `prepare`).
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

// restore_command: PostgreSQL takes any exit of 1 to 125 for "not in the archive" and ends recovery
// there, a silently shorter restore. Only 0 (written) and 1 said on purpose (the file is not stored,
// wal-fetch-fast.ts exitNotStored) are answers; anything else (a module that does not load, a
// setting that does not, an internal error, a crash) must abort recovery: exit 255.
const walFetch = process.argv[2] === 'wal-fetch';
if (walFetch) {
  process.on('exit', (code) => {
    if (
      code === 0 ||
      code === 255 ||
      (code === 1 && globalThis[Symbol.for('pg-maintd.wal-fetch.not-stored')] === true)
    )
      return;
    process.stderr.write(
      `pg-maintd wal-fetch: exit ${code} is not an answer restore_command may give: exiting 255 so recovery stops instead of ending early\n`,
    );
    process.exitCode = 255;
  });
}

// Parallel gzip runs on the libuv thread pool; size it before anything uses it.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() + 2));

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write(
    'pg-maintd: dist/ is missing. Run `npm run build` (or `npm ci`, which builds) first.\n',
  );
  process.exit(70);
}
try {
  // restore_command runs once per WAL file: while a restore serves the files, skip loading the CLI
  const fast =
    walFetch &&
    (await (
      await import(new URL('../dist/cli/wal-fetch-fast.js', import.meta.url).href)
    ).fastWalFetch(process.argv));
  if (!fast) {
    const { main } = await import(entry.href);
    await main(process.argv);
  }
} catch (err) {
  process.stderr.write(`pg-maintd: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = walFetch ? 255 : 70;
}
