#!/usr/bin/env node
// Runnable entry: the compiled CLI lives in dist/ (built by `npm run build`, which `npm ci` runs via `prepare`).
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

// Parallel gzip runs on the libuv thread pool; size it before anything uses it.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() + 2));

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write(
    'pg-maintd: dist/ is missing. Run `npm run build` (or `npm ci`, which builds) first.\n',
  );
  process.exit(70);
}
// restore_command runs once per WAL file: while a restore serves the files, skip loading the CLI
const fast =
  process.argv[2] === 'wal-fetch' &&
  (await (
    await import(new URL('../dist/cli/wal-fetch-fast.js', import.meta.url).href)
  ).fastWalFetch(process.argv));
if (!fast) {
  const { main } = await import(entry.href);
  await main(process.argv);
}
