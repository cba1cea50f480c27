// The collectors' names are declared once in the configuration (METRICS_COLLECTORS, which
// METRICS_COLLECTOR_INTERVALS accepts) and each collector's `name` is typed from that list: this
// checks the other way, that every listed name has a collector the daemon runs, in the same order,
// and that the names are postgres_exporter's, so rules selecting on the `collector` label match.
import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { COLLECTORS_OFF_BY_DEFAULT, METRICS_COLLECTORS } from '../../src/config/fields.js';
import { loadConfig } from '../../src/config/load.js';
import { defaultCollectors } from '../../src/metrics/collectors/index.js';

const names = (env: Record<string, string> = {}) => {
  const { config } = loadConfig({ env: { DATABASE_URL: 'postgresql://u@h/db', ...env } });
  return defaultCollectors(new Registry(), config.metrics).map((c) => c.name);
};

describe('collector names', () => {
  it('are the same list in the configuration and in the collectors the daemon runs', () => {
    expect(names({ METRICS_COLLECTOR_INTERVALS: 'stat_user_indexes=5m' })).toEqual([...METRICS_COLLECTORS]);
  });

  it('leave the collectors that are off by default off until given an interval', () => {
    expect(COLLECTORS_OFF_BY_DEFAULT).toEqual(['stat_user_indexes']);
    expect(names()).toEqual(METRICS_COLLECTORS.filter((n) => n !== 'stat_user_indexes'));
    expect(names({ METRICS_COLLECTOR_INTERVALS: 'stat_user_indexes=off' })).not.toContain(
      'stat_user_indexes',
    );
  });

  it('are the reference exporter’s collector names; the former `bgwriter` still works as an alias', () => {
    // the `collector` column of the list derived from the reference's source
    const reference = new Set(
      readFileSync(new URL('../fixtures/postgres-exporter-default-metrics.txt', import.meta.url), 'utf8')
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => l.split(' ')[3]!),
    );
    // postmaster, database_wraparound and stat_checkpointer are reference collectors that are off by
    // default there; the others are pg-maintd's own (the reference reads conflicts on its legacy path,
    // has no released index-usage collector, and the signals below come from alert sets' custom queries)
    const own = new Set([
      'postmaster',
      'database_wraparound',
      'stat_checkpointer',
      'stat_database_conflicts',
      'stat_user_indexes',
      'stat_statements',
      'bloat',
      'invalid_indexes',
      'wait_events',
      'stat_io',
      'stat_wal',
    ]);
    for (const n of METRICS_COLLECTORS) if (!own.has(n)) expect(reference, n).toContain(n);
    expect(names({ METRICS_COLLECTOR_INTERVALS: 'bgwriter=off' })).not.toContain('stat_bgwriter');
  });
});
