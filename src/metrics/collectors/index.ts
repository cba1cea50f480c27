/** The collectors the daemon runs, in one place (the central map postgres_exporter keeps too). */
import type { Registry } from 'prom-client';
import { COLLECTORS_OFF_BY_DEFAULT } from '../../config/fields.js';
import type { Config } from '../../config/load.js';
import type { Collector } from '../collector.js';
import { ActivityCollector } from './activity.js';
import { BgwriterCollector } from './bgwriter.js';
import { DatabaseCollector, StatDatabaseCollector } from './database.js';
import { LocksCollector } from './locks.js';
import { ReplicationCollector } from './replication.js';
import { ReplicationSlotsCollector } from './replication-slots.js';
import { RolesCollector } from './roles.js';
import { SettingsCollector } from './settings.js';
import { StatArchiverCollector } from './stat-archiver.js';
import { StatDatabaseConflictsCollector } from './stat-database-conflicts.js';
import { StatProgressVacuumCollector } from './stat-progress-vacuum.js';
import { StatReplicationCollector } from './stat-replication.js';
import { StatUserIndexesCollector } from './stat-user-indexes.js';
import { StatementsCollector } from './statements.js';
import { StatioTablesCollector } from './statio-tables.js';
import { PostmasterCollector } from './postmaster.js';
import { TablesCollector } from './tables.js';
import { WalCollector } from './wal.js';
import { BloatCollector } from './bloat.js';
import { CheckpointerCollector } from './checkpointer.js';
import { InvalidIndexesCollector } from './invalid-indexes.js';
import { StatIoCollector } from './stat-io.js';
import { StatWalCollector } from './stat-wal.js';
import { WaitEventsCollector } from './wait-events.js';
import { WraparoundCollector } from './wraparound.js';

/**
 * The collectors the configuration enables: METRICS_COLLECTOR_INTERVALS `name=off` disables one, and
 * an interval enables one that is off by default.
 */
export function defaultCollectors(registry: Registry, m: Config['metrics']): Collector[] {
  const all: Collector[] = [
    new PostmasterCollector(registry),
    new ActivityCollector(registry),
    new LocksCollector(registry, { logWaitsOverSeconds: m.lockWaitLogAfterMs / 1000 }),
    new DatabaseCollector(registry, m.databaseSizeIntervalMs),
    new StatDatabaseCollector(registry),
    new StatDatabaseConflictsCollector(registry),
    new SettingsCollector(registry),
    new BgwriterCollector(registry),
    new TablesCollector(registry, { limit: m.tablesLimit }),
    new StatioTablesCollector(registry, { limit: m.tablesLimit }),
    new StatUserIndexesCollector(registry, { limit: m.tablesLimit }),
    new StatProgressVacuumCollector(registry),
    new StatArchiverCollector(registry),
    new ReplicationCollector(registry),
    new ReplicationSlotsCollector(registry),
    new StatReplicationCollector(registry),
    new WalCollector(registry),
    new RolesCollector(registry),
    new StatementsCollector(registry, {
      limit: m.statementsLimit,
      queryText: m.queryText,
      queryTextLength: m.queryTextLength,
    }),
    new WraparoundCollector(registry),
    new BloatCollector(registry, { limit: m.tablesLimit }),
    new InvalidIndexesCollector(registry),
    new WaitEventsCollector(registry, { windowMs: m.intervalMs }),
    new StatIoCollector(registry),
    new CheckpointerCollector(registry),
    new StatWalCollector(registry),
  ];
  return all.filter((c) => {
    const interval = m.collectorIntervalsMs[c.name];
    return COLLECTORS_OFF_BY_DEFAULT.includes(c.name)
      ? interval !== undefined && interval !== 0
      : interval !== 0;
  });
}
