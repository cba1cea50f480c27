// The scheduled base backup as the daemon will run it: on a primary, under its lease, once per tick
// however often the tick is offered, observed through the PITR metrics.
import { chownSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStorage } from '../../src/backup/storage/index.js';
import { loadConfig } from '../../src/config/load.js';
import { DbPool } from '../../src/db/pool.js';
import { createLogger } from '../../src/log/logger.js';
import { basebackupJob, type PitrJobDeps } from '../../src/pitr/jobs.js';
import { PitrMetrics } from '../../src/pitr/metrics.js';
import type { JobOutcome } from '../../src/schedule/scheduler.js';
import { metricValue, noDefaults } from '../support/backup.js';
import { CLI, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const pgUser = (() => {
  const [, , uid, gid] = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!
    .split(':');
  return { uid: Number(uid), gid: Number(gid) };
})();

let deps: PitrJobDeps;
let registry: Registry;
let store: string;
let client: pg.Client;

beforeAll(async () => {
  store = tempDir('pitr-jobs-store-');
  chownSync(store, pgUser.uid, pgUser.gid);
  const cluster = await startPrivateCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'BACKUP_DIR=${store} ${process.execPath} ${CLI} wal-push %p'`,
      wal_recycle: 'off',
    },
  });
  client = new pg.Client({ connectionString: cluster.url() });
  await client.connect();
  const f = (await client.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f')).rows[0]!.f;
  await waitFor(
    async () =>
      (await client.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver'))
        .rows[0]!.w,
    (w) => w !== null && w >= f,
    60_000,
  );
  const { config } = loadConfig({
    env: {
      DATABASE_URL: cluster.url(),
      DB_SSL_MODE: 'disable',
      BACKUP_DIR: store,
      BASEBACKUP_SCHEDULE: '0 * * * *',
    },
    defaultsDir: noDefaults(),
  });
  const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent', format: 'json' });
  registry = new Registry();
  deps = {
    config,
    storage: await createStorage(config),
    metrics: new PitrMetrics(registry),
    logger,
    lockPool: new DbPool(config.db, { name: 'lock', logger, max: 2, min: 0 }),
  };
}, 120_000);

afterAll(async () => {
  await deps?.lockPool.stop();
  await client?.end();
});

async function outcomes(tick: Date): Promise<JobOutcome[]> {
  const out: JobOutcome[] = [];
  const run = basebackupJob(deps).run(tick, new AbortController().signal);
  for await (const o of run as AsyncIterable<JobOutcome>) out.push(o);
  return out;
}

describe('basebackupJob', () => {
  it('takes one base backup per tick on the primary, under its lease, and counts it', async () => {
    const tick = new Date('2026-01-01T03:00:00Z');
    expect(await outcomes(tick)).toEqual([{ kind: 'ran' }]);
    // the same tick again (another replica, a catch-up): already done
    expect(await outcomes(tick)).toEqual([{ kind: 'skipped', reason: 'already_done' }]);
    const sysid = readdirSync(join(store, 'pitr'))[0]!;
    const manifests = readdirSync(join(store, 'pitr', sysid, 'base')).filter((n) =>
      n.endsWith('.manifest.json'),
    );
    expect(manifests).toHaveLength(1);
    const m = JSON.parse(readFileSync(join(store, 'pitr', sysid, 'base', manifests[0]!), 'utf8')) as {
      trigger: string;
      tick: string;
    };
    expect(m).toMatchObject({ trigger: 'schedule', tick: tick.toISOString() });
    expect(
      await metricValue(registry, 'pgmaintd_basebackup_runs_total', {
        result: 'success',
        trigger: 'schedule',
      }),
    ).toBe(1);
    expect(await metricValue(registry, 'pgmaintd_basebackup_in_progress', {})).toBe(0);
    expect(
      await metricValue(registry, 'pgmaintd_basebackup_last_success_timestamp_seconds', {}),
    ).toBeGreaterThan(0);
  }, 120_000);
});
