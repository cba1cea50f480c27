/**
 * wal-fetch's side of the prefetch exchange (prefetch.ts): asks the pg-maintd restore that serves
 * the data directory for a file and copies it into place. Kept free of the store and the CLI, so that
 * restore_command starts fast: PostgreSQL runs it once per WAL file.
 *
 * The exchange lives outside the data directory, in a directory the restore (root) made and only it
 * can write: `out/` holds the verified files and answers, `in/` is the one place this side (the
 * server's OS user) writes, with empty request files. Root never writes, chowns or follows a path the
 * server's user could have planted; this side only reads what root wrote and copies it.
 */
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { isAbsolute, join } from 'node:path';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

/** In the data directory, written by the restore before the directory is handed to the server's user. */
export const PREFETCH_POINTER = 'pgmaintd-prefetch.json';
export const OUT_DIR = 'out';
export const IN_DIR = 'in';
export const ACTIVE = 'ACTIVE';
export const TAKEN_SUFFIX = '.taken';
export const WANT_SUFFIX = '.want';
/** `<wal file name>.<16 hex>.want`: one request, answered by `<name>` or `<name>.<id>.missing|.error`. */
export const WANT_RE = /^([0-9A-F]{24}|[0-9A-F]{8}\.history)\.([0-9a-f]{16})\.want$/;
export const TAKEN_RE = /^([0-9A-F]{24}|[0-9A-F]{8}\.history)\.taken$/;
const POLL_MS = 50;
/** How long wal-fetch waits for an answer before it gives up (the restore process died). */
const ANSWER_TIMEOUT_MS = 10 * 60_000;

function recoveryAbort(message: string, hint: string): OperatorError {
  return new OperatorError(message, { exitCode: EXIT.RECOVERY_ABORT, hint });
}

export type PrefetchAnswer = 'done' | 'missing' | 'inactive';

/** The exchange directory a restore serves this data directory from, if one is serving it now. */
function exchangeDir(dataDir: string): string | undefined {
  let dir: unknown;
  try {
    dir = (JSON.parse(readFileSync(join(dataDir, PREFETCH_POINTER), 'utf8')) as { dir?: unknown }).dir;
  } catch {
    return undefined;
  }
  if (typeof dir !== 'string' || !isAbsolute(dir)) return undefined;
  try {
    // only a directory root (or the user running this, when pg-maintd is not root) made: a
    // directory another local user created under the same name after the restore ended is not it
    const st = lstatSync(dir);
    const me = process.getuid?.() ?? -1;
    if (!st.isDirectory() || (st.uid !== 0 && st.uid !== me) || (st.mode & 0o022) !== 0) return undefined;
  } catch {
    return undefined;
  }
  return existsSync(join(dir, OUT_DIR, ACTIVE)) ? dir : undefined;
}

/**
 * wal-fetch's side: asks the serving restore process for `name` and copies it to `dest`. 'inactive'
 * when no restore process serves this data directory (read the store instead).
 */
export async function fetchViaPrefetch(dataDir: string, name: string, dest: string): Promise<PrefetchAnswer> {
  const dir = exchangeDir(dataDir);
  if (!dir || !/^([0-9A-F]{24}|[0-9A-F]{8}\.history)$/.test(name)) return 'inactive';
  const out = join(dir, OUT_DIR);
  const inbox = join(dir, IN_DIR);
  const ready = join(out, name);
  const take = async () => {
    // a copy, not a rename: the file is root's, in root's directory
    await copyFile(ready, dest);
    await writeFile(join(inbox, `${name}${TAKEN_SUFFIX}`), '').catch(() => undefined);
    return 'done' as const;
  };
  if (existsSync(ready)) return take();
  const id = randomBytes(8).toString('hex');
  await writeFile(join(inbox, `${name}.${id}${WANT_SUFFIX}`), '');
  const deadline = Date.now() + ANSWER_TIMEOUT_MS;
  for (;;) {
    if (existsSync(ready)) return take();
    if (existsSync(join(out, `${name}.${id}.missing`))) return 'missing';
    const errorFile = join(out, `${name}.${id}.error`);
    if (existsSync(errorFile)) {
      const message = await readFile(errorFile, 'utf8').catch(() => 'unknown error');
      throw recoveryAbort(message, 'see `pg-maintd pitr list` and `pg-maintd pitr verify`');
    }
    if (!existsSync(join(out, ACTIVE))) return 'inactive';
    if (Date.now() > deadline)
      throw recoveryAbort(
        `no answer for ${name} from the pg-maintd restore serving ${dir} within ${ANSWER_TIMEOUT_MS / 60_000} minutes`,
        'check that `pg-maintd pitr restore` still runs',
      );
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
