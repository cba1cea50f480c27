/** The daemon's own connection pools (the seed guide's pool monitor): total, idle and waiting clients. */
import { Gauge, type Registry } from 'prom-client';
import type { DbPool } from '../db/pool.js';

/** `pools` is asked at each scrape: the poller opens and closes per-database pools as databases come and go. */
export function registerPoolMetrics(registry: Registry, pools: () => DbPool[]): void {
  new Gauge({
    name: 'pgmaintd_db_pool_clients',
    help: 'Clients of pg-maintd’s own connection pools, by pool and state (total, idle, waiting).',
    labelNames: ['pool', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of pools()) {
        const s = p.stats();
        const pool = p.name.replace(/^pool:/, '');
        this.set({ pool, state: 'total' }, s.total);
        this.set({ pool, state: 'idle' }, s.idle);
        this.set({ pool, state: 'waiting' }, s.waiting);
      }
    },
  });
}
