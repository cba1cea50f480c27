// Who the migration runner waits for, when it is no session: a prepared transaction (two-phase
// commit) holds locks with no pid and outlives every session and restart. It is named, with the way
// to end it. A cluster of its own: prepared transactions need max_prepared_transactions.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { migrateUp } from '../../src/migrate/runner.js';
import { LOCK_NAMESPACE } from '../../src/db/advisory-lock.js';
import { startPrivateCluster } from '../support/postgres.js';

const logger = createLogger({ level: 'silent', format: 'json' });
let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await startPrivateCluster({ settings: { max_prepared_transactions: 5 } });
});
afterAll(async () => {
  await cluster?.stop();
});

describe('the migration lock held by a prepared transaction', () => {
  it('is named as such (its name, its role, how to end it), not as "a session that has ended"', async () => {
    const c = new pg.Client({ connectionString: cluster.url() });
    await c.connect();
    try {
      await c.query(
        `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, hashtext('migrate')); PREPARE TRANSACTION 'innocent'`,
      );
      const err = (await migrateUp({
        db: {
          url: cluster.url(),
          ssl: { mode: 'disable', rejectUnauthorized: false },
          pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 10_000 },
        },
        dir: new URL('../../migrations', import.meta.url).pathname,
        logger,
        lockWaitMs: 500,
        lockTimeoutMs: 1000,
      }).catch((e: unknown) => e)) as Error;
      expect(err.message, err.message).toMatch(
        /held the migration lock for over 500 ms: the prepared transaction "innocent" \(role postgres, prepared \d+ s ago; no session: COMMIT PREPARED or ROLLBACK PREPARED ends it\)/,
      );
    } finally {
      await c.query("ROLLBACK PREPARED 'innocent'").catch(() => undefined);
      await c.end();
    }
  });
});
