/**
 * wal-fetch's side of the prefetch directory (prefetch.ts): asks the pg-maintd restore that serves
 * the data directory for a file and moves it into place. Kept free of the store and the CLI, so that
 * restore_command starts fast: PostgreSQL runs it once per WAL file.
 */
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

export const PREFETCH_DIR = join('pg_wal', '.pgmaintd-prefetch');
export const ACTIVE = 'ACTIVE';
export const TAKEN_SUFFIX = '.taken';
const POLL_MS = 50;
/** How long wal-fetch waits for an answer before it gives up (the restore process died). */
const ANSWER_TIMEOUT_MS = 10 * 60_000;

function recoveryAbort(message: string, hint: string): OperatorError {
  return new OperatorError(message, { exitCode: EXIT.RECOVERY_ABORT, hint });
}

export type PrefetchAnswer = 'done' | 'missing' | 'inactive';

/**
 * wal-fetch's side: asks the serving restore process for `name` and moves it to `dest`. 'inactive'
 * when no restore process serves this data directory (read the store instead).
 */
export async function fetchViaPrefetch(dataDir: string, name: string, dest: string): Promise<PrefetchAnswer> {
  const dir = join(dataDir, PREFETCH_DIR);
  if (!existsSync(join(dir, ACTIVE))) return 'inactive';
  const ready = join(dir, name);
  if (existsSync(ready)) {
    await rename(ready, dest);
    await writeFile(join(dir, `${name}${TAKEN_SUFFIX}`), '').catch(() => undefined);
    return 'done';
  }
  await writeFile(join(dir, `${name}.want`), '');
  const deadline = Date.now() + ANSWER_TIMEOUT_MS;
  for (;;) {
    if (existsSync(ready)) {
      await rename(ready, dest);
      return 'done';
    }
    if (existsSync(join(dir, `${name}.missing`))) {
      await rm(join(dir, `${name}.missing`), { force: true });
      return 'missing';
    }
    const errorFile = join(dir, `${name}.error`);
    if (existsSync(errorFile)) {
      const message = await readFile(errorFile, 'utf8').catch(() => 'unknown error');
      await rm(errorFile, { force: true });
      throw recoveryAbort(message, 'see `pg-maintd pitr list` and `pg-maintd pitr verify`');
    }
    if (!existsSync(join(dir, ACTIVE))) return 'inactive';
    if (Date.now() > deadline)
      throw recoveryAbort(
        `no answer for ${name} from the pg-maintd restore serving ${dir} within ${ANSWER_TIMEOUT_MS / 60_000} minutes`,
        'check that `pg-maintd pitr restore` still runs',
      );
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
