/** The prom-client registry served on /metrics, with process and Node metrics and build info. */
import { Gauge, type Metric, Registry, collectDefaultMetrics } from 'prom-client';
import { VERSION } from '../core/version.js';

/**
 * A registry that counts changes to its set of metrics, so a scrape knows without listing them
 * (prom-client's getMetricsAsArray() copies a dictionary of hundreds of entries: a third of a
 * millisecond a call).
 */
export class CountingRegistry extends Registry {
  #changes = 0;

  /** Grows whenever a metric may have been added or removed. */
  get changes(): number {
    return this.#changes;
  }

  override registerMetric(metric: Metric): void {
    super.registerMetric(metric);
    this.#changes++;
  }

  override removeSingleMetric(name: string): void {
    super.removeSingleMetric(name);
    this.#changes++;
  }

  override clear(): void {
    super.clear();
    this.#changes++;
  }
}

export function createRegistry(): Registry {
  const registry = new CountingRegistry();
  collectDefaultMetrics({ register: registry });
  const info = new Gauge({
    name: 'pgmaintd_build_info',
    help: 'pg-maintd build information; always 1.',
    labelNames: ['version', 'node_version'] as const,
    registers: [registry],
  });
  info.set({ version: VERSION, node_version: process.version }, 1);
  return registry;
}
