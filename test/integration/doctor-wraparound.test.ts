// The doctor's wraparound check against a real server whose transaction IDs really age: a cluster
// with the smallest autovacuum_freeze_max_age (100,000), a session holding an old snapshot (so no
// vacuum, forced or not, can freeze past it), and 160,000 transactions consumed.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { noDefaults } from '../support/backup.js';
import { startPrivateCluster } from '../support/postgres.js';

const logger = createLogger({ level: 'silent', format: 'json' });

async function wraparound(url: string) {
  const { config } = loadConfig({
    env: { DATABASE_URL: url, DB_SSL_MODE: 'disable', DB_POOL_MAX: '5' },
    defaultsDir: noDefaults(),
  });
  const r = await runDoctor({ config, logger, apply: false });
  return r.findings.find((f) => f.id === 'database.wraparound')!;
}

describe('doctor: database.wraparound', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({ settings: { autovacuum_freeze_max_age: 100000 } });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('is ok on a young cluster, warns once the age is well past autovacuum_freeze_max_age and names the session holding the horizon', async () => {
    const young = await wraparound(cluster.url());
    expect(young.status).toBe('ok');
    expect(young.found).toMatch(/^oldest: database "\w+", (xid|multixact) age [\d,]+ \(autovacuum_/);

    const holder = new pg.Client({ connectionString: cluster.url(), application_name: 'old-snapshot' });
    holder.on('error', () => undefined);
    await holder.connect();
    try {
      await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await holder.query('SELECT txid_current()');
      const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const burner = new pg.Client({ connectionString: cluster.url() });
      await burner.connect();
      try {
        // one transaction each; without waiting for each commit's WAL flush, so it takes seconds
        await burner.query('SET synchronous_commit = off');
        await burner.query(
          'DO $$ BEGIN FOR i IN 1..160000 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$',
        );
      } finally {
        await burner.end();
      }
      const old = await wraparound(cluster.url());
      expect(old.status).toBe('warn');
      expect(old.found).toMatch(/xid age 1[6-9]\d,\d{3} \(autovacuum_freeze_max_age 100,000; 0\.\d %/);
      expect(old.found).toContain(`the oldest horizon is held by session pid ${pid} (`);
      expect(old.fix?.steps?.join('\n')).toMatch(/VACUUM \(FREEZE, VERBOSE\)/);
    } finally {
      await holder.end();
    }
  }, 180_000);
});
