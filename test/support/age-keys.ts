/** Age key pairs made by the reference client (`age-keygen`), for the encryption tests. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** An identity file `<dir>/<name>` and its public key. */
export function ageKeyPair(dir: string, name: string): { file: string; recipient: string } {
  const file = join(dir, name);
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
  return { file, recipient: execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim() };
}
