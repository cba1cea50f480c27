/** The collectors the daemon runs, in one place (the central map postgres_exporter keeps too). */
import type { Registry } from 'prom-client';
import type { Config } from '../../config/load.js';
import type { Collector } from '../collector.js';
import { ActivityCollector } from './activity.js';
import { DatabaseCollector, StatDatabaseCollector } from './database.js';
import { LocksCollector } from './locks.js';
import { ReplicationCollector } from './replication.js';
import { SettingsCollector } from './settings.js';
import { StatementsCollector } from './statements.js';
import { StaticCollector } from './static.js';
import { TablesCollector } from './tables.js';

export function defaultCollectors(registry: Registry, m: Config['metrics']): Collector[] {
  return [
    new StaticCollector(registry),
    new ActivityCollector(registry),
    new LocksCollector(registry, { logWaitsOverSeconds: m.lockWaitLogAfterMs / 1000 }),
    new DatabaseCollector(registry, m.databaseSizeIntervalMs),
    new StatDatabaseCollector(registry),
    new SettingsCollector(registry),
    new TablesCollector(registry, { limit: m.tablesLimit }),
    new ReplicationCollector(registry),
    new StatementsCollector(registry, {
      limit: m.statementsLimit,
      queryText: m.queryText,
      queryTextLength: m.queryTextLength,
    }),
  ];
}
