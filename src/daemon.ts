/**
 * `pg-maintd run`: assembles the components, starts them in order, and drains them on a signal.
 * Nothing waits for the start-up migrations: they run in the background, so a lock someone holds or
 * a failing migration never keeps HTTP, metrics, backups or drills from starting.
 */
import type { Config, LoadedConfig } from './config/load.js';
import { detectTransactionPooler, POOLER_WHY, poolerFix } from './db/pooler.js';
import type { ConnectionTarget } from './core/database-url.js';
import { DbPool } from './db/pool.js';
import { ReadinessProbe } from './health/readiness.js';
import { EventLoopWatchdog } from './health/watchdog.js';
import { HttpServer } from './http/server.js';
import { Lifecycle } from './lifecycle/lifecycle.js';
import type { Component } from './lifecycle/service.js';
import { ShutdownController } from './lifecycle/shutdown.js';
import type { Logger } from './log/logger.js';
import { createRegistry } from './metrics/registry.js';
import { Scheduler } from './schedule/scheduler.js';
import { registerPoolMetrics } from './metrics/pool-metrics.js';
import { pollerFor } from './metrics/poller-for.js';
import { MigrationBootstrap } from './migrate/bootstrap.js';
import { MigrationMetrics } from './migrate/metrics.js';
import { OperatorError, errorMessage } from './core/errors.js';
import { VERSION } from './core/version.js';
import { EXIT } from './core/exit-codes.js';
import { catalogFor } from './backup/catalog-for.js';
import { backupJob, verifyJob } from './backup/jobs.js';
import { BackupMetrics } from './backup/metrics.js';
import { createStorage, type Storage } from './backup/storage/index.js';
import { maintenanceJob } from './maintenance/job.js';
import { MaintenanceMetrics } from './maintenance/metrics.js';
import { LEASE_SESSION } from './db/lease.js';
import { daemonStatus } from './daemon-status.js';
import { WalArchiver } from './pitr/archiver.js';
import { PitrMetrics } from './pitr/metrics.js';
import { BaseBackupTrigger } from './pitr/base-trigger.js';
import { basebackupJob, pitrDrillJob } from './pitr/jobs.js';

export interface Daemon {
  http: HttpServer;
  pool: DbPool;
  shutdown: ShutdownController;
  scheduler: Scheduler;
  storage: Storage;
  /** PITR's metrics, when WAL_ARCHIVE is on (base backups and drills observe through them too). */
  pitrMetrics?: PitrMetrics;
  /** The WAL archiver, when WAL_ARCHIVE is on: `stream` runs pg_receivewal, `command` the heartbeat. */
  archiver?: WalArchiver;
}

export interface DaemonOptions {
  /** Started before everything else and stopped last (the demo's local cluster). */
  first?: Component[];
  /** Called once everything is up. */
  onReady?: (d: Daemon) => void;
}

export async function runDaemon(
  loaded: LoadedConfig,
  logger: Logger,
  opts: DaemonOptions = {},
): Promise<Daemon> {
  const { config } = loaded;
  for (const w of loaded.warnings) logger.warn({ setting: true }, w);
  for (const n of loaded.notices) logger.info({ setting: true }, n);

  // Construct everything first (nothing connects or listens yet), then start in order.
  const registry = createRegistry();
  // the leases' pool: a lock another role holds on the table, or a slow server, must not wedge a job
  const pool = new DbPool(config.db, { name: 'main', logger, ...LEASE_SESSION });
  const readyPool = new DbPool(config.db, {
    name: 'readyz',
    logger,
    max: 1,
    min: 0,
    acquireTimeoutMs: config.http.readyzTimeoutMs,
    statementTimeoutMs: config.http.readyzTimeoutMs,
  });
  const watchdog = new EventLoopWatchdog({ maxLagMs: config.http.livenessMaxLagMs });
  const scheduler = new Scheduler({ maxStallMs: config.http.livenessMaxLagMs, registry, logger });
  const storage = await createStorage(config, { notice: (m) => logger.warn({ job: 'storage' }, m) });
  if (config.s3.bucket) logS3Checksum(loaded, logger);
  const catalog = catalogFor(config, storage);
  // the metrics observe the jobs; the scheduler counts the skips the jobs return
  const backupMetrics = new BackupMetrics(registry, config.backup.databases);
  const jobDeps = { config, storage, catalog, metrics: backupMetrics, logger, lockPool: pool };
  scheduler.addJob(backupJob(jobDeps));
  scheduler.addJob(verifyJob(jobDeps));
  const maintenanceMetrics = new MaintenanceMetrics(registry, config.maintenance.databases);
  scheduler.addJob(maintenanceJob({ config, logger, metrics: maintenanceMetrics, lockPool: pool }));
  const pitrMetrics = config.pitr.archive !== 'off' ? new PitrMetrics(registry) : undefined;
  const pitrDeps = { config, storage, signer: catalog.signer, logger, metrics: pitrMetrics, lockPool: pool };
  const baseTrigger = config.pitr.archive !== 'off' ? new BaseBackupTrigger(pitrDeps) : undefined;
  const archiver =
    config.pitr.archive !== 'off'
      ? new WalArchiver({
          config,
          storage,
          signer: catalog.signer,
          logger,
          metrics: pitrMetrics,
          onGap: (reason) => baseTrigger?.request('wal_gap', `a break in the WAL chain (${reason})`),
          onNewTimeline: (tli) => baseTrigger?.request('new_timeline', `timeline ${tli} began (a promotion)`),
        })
      : undefined;
  if (config.pitr.archive !== 'off') {
    scheduler.addJob(basebackupJob(pitrDeps));
    scheduler.addJob(pitrDrillJob(pitrDeps));
  }
  const poller = pollerFor(config, registry, logger);
  registerPoolMetrics(registry, () => [pool, readyPool, ...poller.pools()]);
  const readiness = new ReadinessProbe(readyPool, {
    intervalMs: config.http.readyzIntervalMs,
    timeoutMs: config.http.readyzTimeoutMs,
    logger,
    onResult: (ok) => poller.reportConnection(ok),
  });
  const http = new HttpServer({
    host: config.http.host,
    port: config.http.port,
    registry,
    logger,
    liveness: { eventLoop: () => watchdog.check(), scheduler: () => scheduler.check() },
    readiness: () => readiness.state(),
    status: daemonStatus({ config, catalog, storage, poller, scheduler, readiness: () => readiness.state() }),
    web: config.http.web,
  });

  // a wrong password or database name, found before the database was ever reached, is a
  // configuration fault as at any start-up; set once the shutdown controller exists
  let onFatal: (err: OperatorError) => void = () => undefined;
  const migrations = config.migrations.onStart
    ? new MigrationBootstrap(
        {
          db: config.db,
          dir: config.migrations.dir,
          logger,
          lockTimeoutMs: config.migrations.lockTimeoutMs,
        },
        logger,
        new MigrationMetrics(registry),
        { onFatal: (err) => onFatal(err) },
      )
    : undefined;

  const lifecycle = new Lifecycle(logger);
  lifecycle.defer('storage', () => storage.close());
  const shutdown = new ShutdownController({
    lifecycle,
    logger,
    graceMs: config.shutdown.graceMs,
    onDrain: () => readiness.markDraining(),
  });
  shutdown.install(); // before anything starts, so a signal during start-up still drains
  onFatal = (err) => {
    logger.fatal({ hint: err.hint }, `start-up stopped: ${err.message}`);
    void shutdown.shutdown('start-up failed', err.exitCode);
  };

  try {
    // HTTP comes up first, so probes answer whatever the database does; the migrations' start()
    // returns at once (they run in the background) and the scheduler does not wait for them
    const order = [...(opts.first ?? []), pool, readyPool, watchdog, poller, readiness, http];
    if (migrations) order.push(migrations);
    if (archiver) order.push(archiver);
    if (baseTrigger) order.push(baseTrigger);
    for (const c of [...order, scheduler]) {
      if (shutdown.draining) break;
      await lifecycle.start(c);
    }
  } catch (err) {
    // A daemon that could not start must not linger half-started (timers alive, no HTTP server).
    if (err instanceof OperatorError) {
      logger.fatal({ hint: err.hint }, `start-up stopped: ${err.message}`);
      await shutdown.shutdown('start-up failed', err.exitCode);
      throw err;
    }
    const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
    logger.fatal(
      { err: { message: errorMessage(err), code: (err as NodeJS.ErrnoException).code } },
      inUse
        ? `cannot listen on ${config.http.host}:${config.http.port}: the port is in use (set HTTP_PORT)`
        : 'start-up failed',
    );
    await shutdown.shutdown('start-up failed', inUse ? EXIT.UNAVAILABLE : EXIT.SOFTWARE);
    throw err;
  }
  const daemon: Daemon = {
    http,
    pool,
    shutdown,
    scheduler,
    storage,
    ...(pitrMetrics ? { pitrMetrics } : {}),
    ...(archiver ? { archiver } : {}),
  };
  async function readStoredState() {
    try {
      await storage.check();
    } catch (err) {
      logger.error(
        { storage: storage.description, hint: (err as { hint?: string }).hint },
        errorMessage(err),
      );
      return;
    }
    for (const database of config.backup.databases) {
      await backupMetrics
        .refresh(catalog, database)
        .catch((err: unknown) =>
          logger.warn({ database, err: { message: errorMessage(err) } }, 'reading stored backups failed'),
        );
    }
  }
  if (shutdown.draining) return daemon; // a signal arrived during start-up; the drain is under way
  logger.info(
    {
      version: VERSION,
      database: pool.description,
      tlsVerified: pool.verified,
      backups: storage.description,
    },
    'pg-maintd started',
  );
  void readStoredState(); // the backup gauges tell the stored truth from the start
  void warnOfTransactionPooler(config.db, pool.target, logger);
  opts.onReady?.(daemon);
  return daemon;
}

/** Which S3_CHECKSUM mode is in effect, and why: a store that refuses it fails every upload. */
function logS3Checksum({ config, origins }: LoadedConfig, logger: Logger): void {
  const mode = config.s3.checksum;
  const why = origins.S3_CHECKSUM
    ? 'set'
    : config.s3.endpoint
      ? 'the default with S3_ENDPOINT'
      : 'the default for AWS S3';
  logger.info({ s3Checksum: mode }, `S3 integrity checksums: ${mode} (${why})`);
}

/** Said once at start: a transaction-mode pooler breaks pg-maintd's sessions in confusing ways. */
async function warnOfTransactionPooler(db: Config['db'], target: ConnectionTarget, logger: Logger) {
  const seen = await detectTransactionPooler(db, target, logger).catch(() => undefined);
  if (!seen) return;
  logger.warn(
    { found: seen.found, why: POOLER_WHY, fix: poolerFix(target).join('; ') },
    `DATABASE_URL ${seen.proven ? 'goes' : 'likely goes'} through a transaction-mode pooler: ${poolerFix(target)[0]}`,
  );
}
