/**
 * pg_settings as postgres_exporter exports them: pg_settings_<name> for every bool, integer and real
 * setting, times converted to seconds (name suffix _seconds) and sizes to bytes (_bytes); -1 stays -1.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

export const SETTINGS_SQL = `SELECT name, setting, coalesce(unit, '') AS unit, short_desc, vartype
               FROM pg_settings WHERE vartype IN ('bool', 'integer', 'real')`;

export interface SettingRow {
  name: string;
  setting: string;
  unit: string;
  short_desc: string;
  vartype: string;
}

const SECONDS: Record<string, number> = { ms: 1 / 1000, s: 1, min: 60, h: 3600, d: 86400 };
const BYTES: Record<string, number> = {
  B: 1,
  kB: 2 ** 10,
  MB: 2 ** 20,
  GB: 2 ** 30,
  TB: 2 ** 40,
  '1kB': 2 ** 10,
  '2kB': 2 ** 11,
  '4kB': 2 ** 12,
  '8kB': 2 ** 13,
  '16kB': 2 ** 14,
  '32kB': 2 ** 15,
  '16MB': 2 ** 24,
  '32MB': 2 ** 25,
  '64MB': 2 ** 26,
  '64kB': 2 ** 16,
};

export interface SettingMetric {
  name: string;
  help: string;
  value: number;
}

/** One pg_settings row as the metric postgres_exporter makes of it; undefined for an unknown unit. */
export function settingMetric(row: SettingRow): SettingMetric | undefined {
  // "auto_explain.log_min_duration" -> pg_settings_auto_explain_log_min_duration; extension settings may
  // hold dashes (the reference replaces . and -), anything else outside a metric name is replaced too
  const base = `pg_settings_${row.name.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  if (row.vartype === 'bool')
    return { name: base, help: row.short_desc, value: row.setting === 'on' ? 1 : 0 };
  // some forks (Aurora) append the unit to the value ("100ms"): the number is what counts
  const raw = Number(/^-?\d+(?:\.\d+)?(?:e[+-]?\d+)?/i.exec(row.setting.trim())?.[0] ?? NaN);
  if (!Number.isFinite(raw)) return undefined;
  if (row.unit === '') return { name: base, help: row.short_desc, value: raw };
  const [suffix, factor] =
    row.unit in SECONDS
      ? ['seconds', SECONDS[row.unit]!]
      : row.unit in BYTES
        ? ['bytes', BYTES[row.unit]!]
        : [undefined, 0];
  if (!suffix) return undefined;
  return {
    name: `${base}_${suffix}`,
    help: `${row.short_desc} [Units converted to ${suffix}.]`,
    value: raw === -1 ? -1 : raw * factor,
  };
}

export class SettingsCollector implements Collector {
  readonly name = 'settings';
  readonly #families = new Map<string, CachedFamily>();

  constructor(
    private readonly registry: Registry,
    readonly intervalMs?: number,
  ) {}

  async collect({ client }: CollectorContext): Promise<void> {
    const r = await client.query<SettingRow>(SETTINGS_SQL);
    const seen = new Set<string>();
    for (const row of r.rows) {
      const m = settingMetric(row);
      if (!m) continue;
      let family = this.#families.get(m.name);
      if (!family) {
        family = new CachedFamily(this.registry, { name: m.name, help: m.help || m.name, type: 'gauge' });
        this.#families.set(m.name, family);
      }
      family.replace([{ labels: {}, value: m.value }]);
      seen.add(m.name);
    }
    for (const [name, family] of this.#families) if (!seen.has(name)) family.clear();
  }

  clear(): void {
    for (const f of this.#families.values()) f.clear();
  }
}
