/**
 * The running daemon's status summary (the landing page and /status), from what it holds in memory:
 * the poller's pg_up and collector health, the scheduler's next slots, and the store's last listing
 * per database. Nothing here queries the database or lists the store.
 */
import type { Config } from './config/load.js';
import type { Catalog } from './backup/catalog.js';
import { StoreSummary } from './backup/store-summary.js';
import type { Storage } from './backup/storage/storage.js';
import type { ReadinessState } from './health/readiness.js';
import type { Poller } from './metrics/poller.js';
import type { Scheduler } from './schedule/scheduler.js';
import { summarize, type StatusSummary } from './status/summary.js';

export function daemonStatus(deps: {
  config: Config;
  catalog: Catalog;
  storage: Storage;
  poller: Poller;
  scheduler: Scheduler;
  readiness: () => ReadinessState;
}): () => StatusSummary {
  const { config, poller, scheduler, storage } = deps;
  const stored = new StoreSummary(config.backup.databases).follow(deps.catalog);
  return () => {
    const ready = deps.readiness();
    return summarize({
      source: 'daemon',
      now: new Date(),
      database: {
        up: poller.up,
        target: poller.pool.description,
        // the readiness probe's word for why (it checks every READYZ_INTERVAL)
        error: ready.ready ? null : `readiness: ${ready.reason ?? 'not ready'}`,
      },
      store: { description: storage.description },
      backupSchedule: { cron: config.backup.schedule, timezone: config.backup.timezone },
      backups: stored.facts(),
      jobs: scheduler.upcoming(),
      collectors: poller.collectorHealth(),
    });
  };
}
