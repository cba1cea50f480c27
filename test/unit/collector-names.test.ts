// The collectors' names are declared once in the configuration (METRICS_COLLECTORS, which
// METRICS_COLLECTOR_INTERVALS accepts) and each collector's `name` is typed from that list: this
// checks the other way, that every listed name has a collector the daemon runs, in the same order.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { METRICS_COLLECTORS } from '../../src/config/fields.js';
import { loadConfig } from '../../src/config/load.js';
import { defaultCollectors } from '../../src/metrics/collectors/index.js';

describe('collector names', () => {
  it('are the same list in the configuration and in the collectors the daemon runs', () => {
    const { config } = loadConfig({ env: { DATABASE_URL: 'postgresql://u@h/db' } });
    const names = defaultCollectors(new Registry(), config.metrics).map((c) => c.name);
    expect(names).toEqual([...METRICS_COLLECTORS]);
  });
});
