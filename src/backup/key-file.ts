/**
 * The signing key file (BACKUP_SIGNING_KEY_FILE): one key per line, blank lines and # comments
 * ignored. Read when the configuration is checked and where backups are signed; never printed.
 */
import { readFileSync } from 'node:fs';
import { fileReadProblem } from '../core/errors.js';

const MIN_KEY_BYTES = 32;
const MAX_KEYS = 16;

/** The keys of a key file: non-empty lines that are not comments, each at least 32 bytes. */
export function readSigningKeys(path: string): Buffer[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(fileReadProblem(err));
  }
  const keys = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => Buffer.from(l, 'utf8'));
  if (keys.length === 0) throw new Error('it holds no key');
  if (keys.length > MAX_KEYS) throw new Error(`it holds ${keys.length} keys; at most ${MAX_KEYS}`);
  const short = keys.findIndex((k) => k.length < MIN_KEY_BYTES);
  if (short >= 0)
    throw new Error(
      `key ${short + 1} has ${keys[short]!.length} bytes; each needs at least ${MIN_KEY_BYTES} (e.g. \`openssl rand -base64 48\`)`,
    );
  return keys;
}
