/** The prom-client registry served on /metrics, with process and Node metrics and build info. */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { VERSION } from '../core/version.js';

export function createRegistry(): Registry {
  const registry = new Registry();
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
