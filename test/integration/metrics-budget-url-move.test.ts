// DATABASE_URL_FILE moves the main database (a failover, a switchover): from then on every poll goes to
// the new target. A connection to the old one that comes back from a poll while another collector
// waits for the main database must not be handed over as it is (it would poll the old server), but
// closed, as an idle one is. Two real servers, the budget at one connection so the second collector
// waits for the first one's.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CollectorName } from '../../src/config/fields.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import type { Collector, CollectorContext } from '../../src/metrics/collector.js';
import { Poller } from '../../src/metrics/poller.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

let a: LocalCluster;
let b: LocalCluster;
beforeAll(async () => {
  a = await startPrivateCluster();
  b = await startPrivateCluster();
}, 120_000);
afterAll(async () => {
  await a?.stop();
  await b?.stop();
});

/** A collector that records the port of the server it polled; `before` runs inside its poll. */
function portOf(name: string, before?: () => Promise<void>) {
  const seen: number[] = [];
  const c: Collector = {
    name: name as CollectorName,
    async collect({ client }: CollectorContext) {
      seen.push(
        Number((await client.query<{ p: string }>("SELECT current_setting('port') AS p")).rows[0]!.p),
      );
      await before?.();
    },
    clear() {},
  };
  return { c, seen };
}

describe('the main database moved by DATABASE_URL_FILE', () => {
  it('a connection to the old target is not handed to the next waiter: its poll goes to the new one', async () => {
    const urlFile = join(tempDir('url-move-'), 'database-url');
    writeFileSync(urlFile, a.url('postgres'));
    let move = false;
    const first = portOf('first', async () => {
      if (!move) return;
      move = false;
      writeFileSync(urlFile, b.url('postgres'));
      // the URL file is looked at about once a second
      await new Promise((r) => setTimeout(r, 1500));
    });
    const second = portOf('second');
    const p = new Poller({
      db: {
        url: a.url('postgres'),
        urlFile,
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 10_000 },
      },
      registry: new Registry(),
      logger: createLogger({ level: process.env.DBG ? 'debug' : 'silent', format: 'json' }),
      collectors: [first.c, second.c],
      intervalMs: 60_000,
      statementTimeoutMs: 10_000,
      lockTimeoutMs: 1000,
      maxConnections: 1,
    });
    try {
      await p.pollAll();
      expect([first.seen, second.seen]).toEqual([[a.port], [a.port]]);
      // `first` holds the one connection while `second` waits; the file moves during its poll
      move = true;
      await p.pollAll();
      expect(first.seen.at(-1)).toBe(a.port);
      expect(second.seen.at(-1)).toBe(b.port);
      await p.pollAll();
      expect([first.seen.at(-1), second.seen.at(-1)]).toEqual([b.port, b.port]);
    } finally {
      await p.closeConnections();
    }
  }, 60_000);
});
