// Every metric family postgres_exporter exports with its default flags, by name, type and label
// names, is one pg-maintd exports too: test/fixtures/postgres-exporter-default-metrics.txt is derived
// from the reference's source (its header names the version and commit; scripts/reference-metrics.mjs
// regenerates it), and this fails when a name is missing or differs. The families are read from a
// registry holding every collector and the poller, as the daemon builds them.
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { defaultCollectors } from '../../src/metrics/collectors/index.js';
import { Poller } from '../../src/metrics/poller.js';
import { createRegistry } from '../../src/metrics/registry.js';

interface Family {
  name: string;
  type: string;
  labels: string[];
  collector: string;
}

const FIXTURE = new URL('../fixtures/postgres-exporter-default-metrics.txt', import.meta.url);
const reference: Family[] = readFileSync(FIXTURE, 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'))
  .map((l) => {
    const [name, type, labels, ...collector] = l.split(' ');
    return {
      name: name!,
      type: type!,
      labels: labels === '-' ? [] : labels!.split(','),
      collector: collector.join(' '),
    };
  });

/**
 * The reference's families pg-maintd has under another name or has no use for, and why. Anything
 * else missing fails the test.
 */
const NOT_EXPORTED: Record<string, string> = {
  postgres_exporter_build_info: 'the exporter’s own build: pg-maintd has pgmaintd_build_info',
  postgres_exporter_config_last_reload_successful:
    'reload of the reference’s auth-module file, which pg-maintd has not',
  postgres_exporter_config_last_reload_success_timestamp_seconds: 'the same',
};

const { config } = loadConfig({
  env: {
    DATABASE_URL: 'postgresql://u@127.0.0.1:1/db',
    DB_SSL_MODE: 'disable',
    METRICS_COLLECTOR_INTERVALS: 'stat_user_indexes=5m',
  },
});
const registry = createRegistry();
const poller = new Poller({
  db: config.db,
  registry,
  logger: createLogger({ level: 'silent', format: 'json' }),
  collectors: defaultCollectors(registry, config.metrics),
  intervalMs: 60_000,
  statementTimeoutMs: 5000,
  lockTimeoutMs: 1000,
});
afterAll(() => poller.stop());

/** What a registered metric says of itself: prom-client's metrics and CachedFamily alike. */
function describeMetric(name: string): { type: string; labels: string[] } | undefined {
  const m = registry.getSingleMetric(name) as unknown as
    { type?: string; labelNames?: readonly string[]; get?: unknown } | undefined;
  if (!m) return undefined;
  return { type: String(m.type), labels: [...(m.labelNames ?? [])] };
}

describe('postgres_exporter parity', () => {
  it('the list is derived from a reference of 0.17 or later and has the families it should', () => {
    const header = readFileSync(FIXTURE, 'utf8').split('\n')[0]!;
    const [, major, minor] = /postgres_exporter v(\d+)\.(\d+)\.\d+.*commit [0-9a-f]{40}/.exec(header) ?? [];
    expect(Number(major) > 0 || Number(minor) >= 17, header).toBe(true);
    expect(reference.length).toBeGreaterThan(100);
    expect(new Set(reference.map((f) => f.name)).size).toBe(reference.length);
  });

  it.each(reference.filter((f) => !(f.name in NOT_EXPORTED)).map((f) => [f.name, f] as const))(
    '%s is exported with the reference’s type and labels',
    (_name, f) => {
      if (f.name === 'pg_settings_<name>') {
        // one family per setting, made at poll time: the settings collector's tests read them
        expect(config.metrics.collectorIntervalsMs.settings).not.toBe(0);
        return;
      }
      const mine = describeMetric(f.name);
      expect(mine, `${f.name} (reference collector ${f.collector}) is not exported`).toBeDefined();
      expect(mine!.type, f.name).toBe(f.type);
      expect([...mine!.labels].sort(), f.name).toEqual([...f.labels].sort());
    },
  );

  it('the families not exported have a reason, and are in the reference list', () => {
    for (const name of Object.keys(NOT_EXPORTED)) expect(reference.map((f) => f.name)).toContain(name);
    expect(describeMetric('pgmaintd_build_info')?.labels).toEqual(['version', 'node_version']);
  });
});
