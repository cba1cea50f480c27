/**
 * Per test file: no CLI process or private cluster outlives the file that started it, and the file
 * leaves nothing in the temp directory. The file runs with TMPDIR set to a folder of its own (in the
 * run's, see global-setup.ts), so what it and the processes it starts make there is its own, whatever
 * runs beside it; whatever is left when it ends fails it, by name.
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, inject } from 'vitest';
import { reapClis } from './daemon.js';
import { stopPrivateClusters } from './postgres.js';
import { removeAllTemp } from './temp.js';

/** What tools make in the temp directory on their own, for themselves (npm's and tsc's Node compile cache). */
const CACHES = new Set(['node-compile-cache']);

const outer = process.env.TMPDIR;
const own = mkdtempSync(join(inject('tmpRoot') ?? tmpdir(), 'file-'));
// a private cluster's folder is made in here, and its server runs as the postgres user
chmodSync(own, 0o711);
process.env.TMPDIR = own;

afterAll(async () => {
  const left = reapClis();
  // a passing file that leaves one running has a missing stop: say so rather than hide it
  if (left > 0) console.warn(`killed ${left} pg-maintd process(es) this test file left running`);
  const clusters = await stopPrivateClusters();
  if (clusters > 0)
    console.warn(`stopped ${clusters} private PostgreSQL cluster(s) this test file left running`);
  removeAllTemp();
  const leftovers = readdirSync(own).filter((name) => !CACHES.has(name));
  rmSync(own, { recursive: true, force: true, maxRetries: 5 });
  if (outer === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = outer;
  if (leftovers.length > 0) {
    throw new Error(
      `this test file left ${leftovers.length} entr${leftovers.length === 1 ? 'y' : 'ies'} in the temp directory: ` +
        `${leftovers.join(', ')}. Make temporary folders with tempDir() from test/support/temp.ts, ` +
        'or remove them in the test that made them.',
    );
  }
});
