/** The poller the configuration describes, with every default collector: the daemon's and `status`'s. */
import type { Registry } from 'prom-client';
import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { defaultCollectors } from './collectors/index.js';
import { Poller } from './poller.js';

export function pollerFor(config: Config, registry: Registry, logger: Logger): Poller {
  return new Poller({
    db: config.db,
    registry,
    logger,
    collectors: defaultCollectors(registry, config.metrics),
    intervalMs: config.metrics.intervalMs,
    intervals: config.metrics.collectorIntervalsMs,
    databases: config.metrics.databases,
    maxConnections: config.metrics.maxConnections,
    statementTimeoutMs: config.metrics.statementTimeoutMs,
    lockTimeoutMs: config.metrics.lockTimeoutMs,
  });
}
