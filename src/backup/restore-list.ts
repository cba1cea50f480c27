/**
 * pg_restore's list of a custom-format backup without the given extensions and their comments, for
 * --use-list. pg_restore reads only the archive's table of contents, at its start, then exits.
 */
import { spawn } from 'node:child_process';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { OperatorError } from '../core/errors.js';
import { toolPath } from '../programs/client-tools.js';
import { extensionAlternation } from './extension-filter.js';
import type { Readable } from 'node:stream';

export async function listWithout(
  source: Readable,
  key: string,
  clientBinDir: string | undefined,
  extensions: string[],
): Promise<string> {
  // no connection, so no credentials: an environment of its own, not ours
  const child = spawn(toolPath('pg_restore', clientBinDir), ['--list'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  // pg_restore stops reading after the table of contents: the broken pipe that follows is expected
  pipeline(source, createGunzip(), child.stdin!, () => undefined);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  }).finally(() => source.destroy());
  if (code !== 0)
    throw new OperatorError(
      `pg_restore --list of ${key} failed: ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
    );
  const entry = new RegExp(
    `\\b(?:EXTENSION - |COMMENT - EXTENSION )(?:${extensionAlternation(extensions)})(?:\\s|$)`,
  );
  return out
    .split('\n')
    .filter((line) => !entry.test(line))
    .join('\n');
}
