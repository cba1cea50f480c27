/**
 * `pg-maintd demo`: a throwaway local PostgreSQL cluster (the test harness's code) with the app's
 * database `app`: the migrations applied, sample users, projects and tasks, and some traffic with a
 * lock wait now and then. The daemon runs against it with backups in the local BACKUP_DIR, takes a
 * first backup and a restore drill at once, and prints where everything is. Ctrl-C stops it all and
 * removes the cluster.
 */
import { join } from 'node:path';
import pg from 'pg';
import { catalogFor } from '../backup/catalog-for.js';
import { loadConfig, type LoadInput } from '../config/load.js';
import { preflight } from './preflight.js';
import { runDaemon } from '../daemon.js';
import { DemoActivity } from '../embedded/activity.js';
import { LocalCluster } from '../embedded/local-cluster.js';
import { insertSampleData } from '../embedded/sample-data.js';
import { createLogger } from '../log/logger.js';
import { migrateUp } from '../migrate/runner.js';
import { errorMessage } from '../core/errors.js';
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import { systemIdentifier } from '../db/cluster.js';
import type { DbPool } from '../db/pool.js';
import { listPitr, loadHistories } from '../pitr/pitr-catalog.js';
import { pitrSummary } from '../pitr/store-metrics.js';

const DATABASE = 'app';

export async function runDemo(input: LoadInput): Promise<void> {
  const cluster = new LocalCluster();
  // Start the cluster before loading config: DATABASE_URL points at it.
  await cluster.start();
  process.env.PGPASSWORD = cluster.password; // the password stays out of the URL, argv and logs
  const loaded = preflight(
    loadConfig({
      ...input,
      env: {
        METRICS_LOCK_WAIT_LOG_AFTER: '5s', // the demo's lock waits last 15 s: show the log line
        // point-in-time recovery: WAL streamed beside the dumps, a first base backup at once
        WAL_ARCHIVE: 'stream',
        // the throwaway cluster's WAL in a spool of its own, removed with it: the next demo's
        // cluster is another one, and would find this one's WAL in a shared spool (and refuse it)
        WAL_SPOOL_DIR: join(cluster.dir, 'wal-spool'),
        ...process.env,
        DATABASE_URL: cluster.url(DATABASE, cluster.user, null),
        DB_SSL_MODE: 'disable', // the throwaway cluster listens on loopback without TLS
        HTTP_HOST: process.env.HTTP_HOST ?? '127.0.0.1',
        MIGRATE_ON_START: 'false', // the demo migrates below, before it loads the sample data
      },
    }),
  );
  const { config } = loaded;
  const logger = createLogger({ ...config.log, secrets: loaded.secrets });
  logger.info(
    { binaries: cluster.binaries, dataDir: cluster.dataDir },
    'demo: throwaway PostgreSQL cluster started',
  );

  try {
    const admin = new pg.Client({ connectionString: cluster.url('postgres') });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${DATABASE}`);
    await admin.end();
    const migrated = await migrateUp({
      db: config.db,
      dir: config.migrations.dir,
      logger,
      lockWaitMs: config.migrations.lockWaitMs,
      lockTimeoutMs: config.migrations.lockTimeoutMs,
    });
    const session = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
      const c = new pg.Client({ connectionString: cluster.url(DATABASE) });
      await c.connect();
      return fn(c).finally(() => c.end());
    };
    const rows = await session((c) =>
      insertSampleData(c, { users: 500, projectsPerUser: 4, tasksPerProject: 6 }),
    );
    // statement metrics (the cluster preloads pg_stat_statements), and fresh planner statistics
    await session((c) =>
      c.query('CREATE EXTENSION pg_stat_statements; ANALYZE users; ANALYZE projects; ANALYZE tasks'),
    );
    logger.info(
      { migrations: migrated.applied.length, ...rows },
      'demo: schema migrated and sample data loaded',
    );
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  const activity = new DemoActivity(cluster.url(DATABASE), logger, {
    lockHoldMs: 15_000,
    lockEveryMs: 30_000,
  });

  await runDaemon(loaded, logger, {
    first: [cluster, activity],
    onReady: ({ http, pool, scheduler, storage }) => {
      const base = `http://${http.address.host.includes(':') ? `[${http.address.host}]` : http.address.host}:${http.address.port}`;
      process.stdout.write(
        [
          '',
          'pg-maintd demo is running.',
          `  database  postgresql://${pool.description}  (password in PGPASSWORD of this process)`,
          `            users, projects and tasks migrated and filled; demo traffic with a lock wait every 30 s`,
          `  metrics   ${base}/metrics`,
          `  liveness  ${base}/healthz`,
          `  readiness ${base}/readyz`,
          'Press Ctrl-C to stop; the throwaway cluster is removed.',
          '',
        ].join('\n'),
      );
      // A first backup right away, then a restore drill of it, so the demo shows both.
      if (!scheduler.has('backup')) {
        process.stdout.write('  backup    off (BACKUP_SCHEDULE=off)\n');
        return;
      }
      void (async () => {
        await scheduler.trigger('backup');
        const catalog = catalogFor(config, storage);
        for (const database of config.backup.databases) {
          const latest = await catalog.latest(database);
          process.stdout.write(
            latest
              ? `  backup    ${storage.description}/${latest.key} (${latest.size} bytes, manifest beside it)\n`
              : `  backup    none yet for ${database}: see the log above\n`,
          );
        }
        if (scheduler.has('verify')) {
          await scheduler.trigger('verify');
          for (const database of config.backup.databases) {
            const latest = await catalog.latest(database);
            process.stdout.write(
              latest?.verify?.ok
                ? `  verified  ${latest.key}: restored into a scratch database, ${latest.verify.tablesCompared} tables' row counts match\n`
                : `  verified  no: the restore drill of ${database} failed, see the log above\n`,
            );
          }
        }
        if (config.pitr.archive !== 'off') {
          const window = await restorableWindow(pool, storage, catalogFor(config, storage).signer);
          process.stdout.write(
            window
              ? `  PITR      WAL streamed to ${storage.description}/pitr/; restorable from ${window.start.toISOString()} to about ${window.end.toISOString()} (pg-maintd pitr list; pg-maintd pitr restore --target-time ...)\n`
              : '  PITR      no usable base backup yet: see the log above\n',
          );
        }
      })().catch((err: unknown) =>
        logger.error(
          { err: { message: errorMessage(err) } },
          'demo: the first backup, drill or base backup could not be listed',
        ),
      );
    },
  });
}

/** Waits (up to two minutes) for the first base backup and the WAL after it, then the window. */
async function restorableWindow(pool: DbPool, storage: Storage, signer: Signer | undefined) {
  const sysid = await systemIdentifier(pool);
  const deadline = performance.now() + 120_000;
  while (performance.now() < deadline) {
    const listing = await listPitr(storage, sysid, { signer });
    const window = pitrSummary(listing, await loadHistories(storage, listing, { signer })).window;
    if (window) return window;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return undefined;
}
