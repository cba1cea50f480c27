// The Grafana dashboards and provisioning files in dashboards/: their structure, their variables, and
// that every metric their expressions use is one pg-maintd defines (a typo fails). Whether each
// expression returns data is checked against a real Prometheus elsewhere.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../../src/log/logger.js';
import { SettingsCollector } from '../../src/metrics/collectors/settings.js';
import { createRegistry } from '../../src/metrics/registry.js';
import { adminUrl } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DASHBOARDS = join(ROOT, 'dashboards');
const SRC = join(ROOT, 'src');
const FILES = ['pg-maintd-postgresql-overview.json', 'pg-maintd-backups-maintenance.json'];
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

interface Target {
  expr?: string;
  refId?: string;
  instant?: boolean;
  range?: boolean;
  datasource?: unknown;
}
interface Panel {
  id?: number;
  type: string;
  title?: string;
  gridPos?: { h: number; w: number; x: number; y: number };
  datasource?: unknown;
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: unknown;
  datasource?: unknown;
  multi?: boolean;
  includeAll?: boolean;
}
interface Dashboard {
  uid: string;
  title: string;
  tags: string[];
  schemaVersion: number;
  time: { from: string; to: string };
  refresh: string;
  templating: { list: Variable[] };
  panels: Panel[];
}

const dashboards: Array<[string, Dashboard]> = FILES.map((f) => [
  f,
  JSON.parse(readFileSync(join(DASHBOARDS, f), 'utf8')) as Dashboard,
]);

/** Every panel, those inside rows (collapsed or not) included; rows themselves left out. */
function panelsOf(d: Dashboard): Panel[] {
  const out: Panel[] = [];
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      if (p.type === 'row') walk(p.panels ?? []);
      else out.push(p);
    }
  };
  walk(d.panels);
  return out;
}

/** Every panel and row, for the id and grid checks. */
function allPanelsOf(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => (p.type === 'row' ? [p, ...(p.panels ?? [])] : [p]));
}

const exprsOf = (d: Dashboard) =>
  panelsOf(d).flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title ?? '', target: t })));

// ---------------------------------------------------------------- reading PromQL

const METRIC = /^(pg|pgmaintd|process|nodejs)_[a-z0-9_]+$/;

interface Selector {
  name: string;
  /** label -> [operator, value] */
  matchers: Map<string, [string, string]>;
}

function skipString(s: string, i: number): number {
  const q = s[i];
  let j = i + 1;
  while (j < s.length && s[j] !== q) j += s[j] === '\\' ? 2 : 1;
  return j + 1;
}

function skipBraces(s: string, i: number): number {
  let j = i + 1;
  while (j < s.length && s[j] !== '}') j = s[j] === '"' || s[j] === "'" ? skipString(s, j) : j + 1;
  return j + 1;
}

/**
 * The metric selectors of a PromQL expression: identifiers shaped like the daemon's metric names,
 * outside string literals (so label values such as reason="pg_dump" are not taken for metrics) and not
 * followed by "(" (functions), with their label matchers.
 */
function selectorsOf(expr: string): Selector[] {
  const out: Selector[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i]!;
    if (c === '"' || c === "'" || c === '`') {
      i = skipString(expr, i);
      continue;
    }
    const word = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(expr.slice(i))?.[0];
    if (!word || (i > 0 && /[A-Za-z0-9_:$]/.test(expr[i - 1]!))) {
      i++;
      continue;
    }
    let j = i + word.length;
    while (expr[j] === ' ') j++;
    if (METRIC.test(word) && expr[j] !== '(') {
      const matchers = new Map<string, [string, string]>();
      if (expr[j] === '{') {
        const end = skipBraces(expr, j);
        const body = expr.slice(j + 1, end - 1);
        for (const m of body.matchAll(/([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g))
          matchers.set(m[1]!, [m[2]!, m[3]!]);
        j = end;
      }
      out.push({ name: word, matchers });
    }
    i = j > i + word.length ? j : i + word.length;
  }
  return out;
}

// ---------------------------------------------------------------- the metric names pg-maintd defines

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

interface KnownNames {
  /** Names with where they come from (a source file, the test server's pg_settings, prom-client). */
  names: Map<string, string>;
  /** Histograms and summaries, whose _bucket/_sum/_count series exist too. */
  histograms: Set<string>;
}

/**
 * The names in src/: every string literal that is a whole metric name (`name: 'pg_up'`,
 * `counter('pg_stat_statements_calls_total', ...)`), and the families built from a template such as
 * `pg_stat_database_${column}` or `pg_stat_bgwriter_${column}_total`, expanded with the string literals
 * of the same file (the column lists next to them). pg_settings_<name> comes from the server; it is
 * left to the test server below.
 */
function namesInSource(): KnownNames {
  const names = new Map<string, string>();
  const histograms = new Set<string>();
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    const where = relative(ROOT, file);
    const literals = [...text.matchAll(/'([^'\\\n]*)'|"([^"\\\n]*)"|`([^`\\$\n]*)`/g)].map(
      (m) => m[1] ?? m[2] ?? m[3] ?? '',
    );
    for (const l of literals) if (METRIC.test(l)) names.set(l, where);
    for (const m of text.matchAll(/new (?:Histogram|Summary)\(\{\s*name:\s*'([^']+)'/g))
      histograms.add(m[1]!);
    for (const m of text.matchAll(/`((?:pg|pgmaintd)_[a-z0-9_]*)\$\{(\w+)\}([a-z0-9_]*)`/g)) {
      const [, prefix, variable, suffix] = m as unknown as [string, string, string, string];
      if (prefix === 'pg_settings_') continue; // PostgreSQL's settings, not the daemon's literals
      for (const l of literals)
        if (/^[a-z0-9_]+$/.test(l)) names.set(`${prefix}${l}${suffix}`, `${where} (\${${variable}})`);
    }
  }
  return { names, histograms };
}

/** pg_settings_*: what the daemon's settings collector exports from the test server's pg_settings. */
async function settingsNames(): Promise<string[]> {
  const registry = new Registry();
  const collector = new SettingsCollector(registry);
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    await collector.collect({
      client: client as unknown as pg.PoolClient,
      database: client.database ?? 'postgres',
      serverVersionNum: Number((await client.query('SHOW server_version_num')).rows[0].server_version_num),
      logger: undefined as unknown as Logger, // the settings collector logs nothing
    });
  } finally {
    await client.end();
  }
  return registry.getMetricsAsArray().map((m) => (m as unknown as { name: string }).name);
}

/** The daemon's registry as created (process and Node.js metrics from prom-client, build info). */
async function registryNames(): Promise<Array<{ name: string; type: string }>> {
  const registry = createRegistry();
  return (await registry.getMetricsAsJSON()).map((m) => ({ name: m.name, type: String(m.type) }));
}

let known: KnownNames;

/** Where `name` is defined, or undefined: exact names first, then histogram series of a histogram. */
function resolve(name: string): string | undefined {
  const exact = known.names.get(name);
  if (exact) return exact;
  const base = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1];
  if (base && known.histograms.has(base)) return known.names.get(base);
  return undefined;
}

beforeAll(async () => {
  known = namesInSource();
  for (const n of await settingsNames()) known.names.set(n, 'pg_settings of the test server');
  for (const { name, type } of await registryNames()) {
    known.names.set(name, 'createRegistry()');
    if (type === 'histogram' || type === 'summary') known.histograms.add(name);
  }
});

// ---------------------------------------------------------------- the labels of the metrics

/** Metrics with a datname label (README "Database metrics"): their selectors must filter on $datname. */
const HAS_DATNAME =
  /^(pg_stat_database_|pg_stat_activity_|pg_stat_user_tables_|pg_stat_statements_(?!query_id$)|pg_locks_count$|pg_database_size_bytes$|pg_database_connection_limit$|pgmaintd_idle_in_transaction_max_seconds$|pgmaintd_blocked_sessions$|pgmaintd_lock_wait_max_seconds$|pg_database_wraparound_|pg_bloat_|pg_general_index_info_|pgmaintd_invalid_index_info$|pgmaintd_wraparound_)/;
/** pg-maintd's metrics with a database label (README "Backup metrics", "Maintenance"): filtered on $datname too. */
const HAS_DATABASE =
  /^(pgmaintd_backup_(?!in_progress$)|pgmaintd_retention_deleted_total$|pgmaintd_maintenance_(?!runs_total$))/;

const VARIABLES = new Set(['instance', 'datname', '__rate_interval', '__range']);

// ---------------------------------------------------------------- the tests

describe.each(dashboards)('%s', (file, d) => {
  it('is a schemaVersion 39+ dashboard with a stable uid, title, tags, time range and refresh', () => {
    expect(d.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(d.uid).toBe(file.replace(/\.json$/, ''));
    expect(d.uid.length).toBeLessThanOrEqual(40); // Grafana's limit
    expect(d.title).toMatch(/^pg-maintd \/ /);
    expect(d.tags).toEqual(expect.arrayContaining(['pg-maintd', 'postgresql']));
    expect(d.time.from).toMatch(/^now-/);
    expect(d.refresh).toMatch(/^\d+[smh]$/);
  });

  it('has the datasource, instance and datname variables', () => {
    const vars = new Map(d.templating.list.map((v) => [v.name, v]));
    expect(vars.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const [name, label] of [
      ['instance', 'instance'],
      ['datname', 'datname'],
    ] as const) {
      const v = vars.get(name);
      expect(v, name).toMatchObject({ type: 'query', datasource: DATASOURCE, multi: true, includeAll: true });
      const query = v!.query as string;
      const m = /^label_values\((.+), (\w+)\)$/.exec(query);
      expect(m, query).not.toBeNull();
      expect(m![2]).toBe(label);
      for (const s of selectorsOf(m![1]!)) expect(resolve(s.name), s.name).toBeDefined();
    }
  });

  it('has unique panel ids and a grid position for every panel and row', () => {
    const all = allPanelsOf(d);
    const ids = all.map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of all) {
      expect(p.gridPos, p.title).toBeDefined();
      const { x, y, w, h } = p.gridPos!;
      expect([x, y, w, h].every(Number.isInteger), p.title).toBe(true);
      expect(x >= 0 && w > 0 && h > 0 && x + w <= 24, p.title).toBe(true);
    }
  });

  it('uses modern panel types, each on ${datasource} with at least one expression', () => {
    const panels = panelsOf(d);
    expect(panels.length).toBeGreaterThan(10);
    for (const p of panels) {
      expect(['timeseries', 'stat', 'table', 'gauge'], p.title).toContain(p.type);
      expect(p.datasource, p.title).toEqual(DATASOURCE);
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      expect(
        p.targets!.some((t) => (t.expr ?? '').trim() !== ''),
        p.title,
      ).toBe(true);
      for (const t of p.targets!) {
        expect(t.datasource, `${p.title} ${t.refId}`).toEqual(DATASOURCE);
        expect((t.expr ?? '').trim(), `${p.title} ${t.refId}`).not.toBe('');
      }
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
    }
  });

  it('filters every selector on $instance, and on $datname where the metric has a database label', () => {
    for (const { panel, target } of exprsOf(d)) {
      const selectors = selectorsOf(target.expr!);
      expect(selectors.length, `${panel}: ${target.expr}`).toBeGreaterThan(0);
      expect(target.expr, panel).not.toContain('__name__'); // names must stay visible to the checks
      for (const s of selectors) {
        const where = `${panel}: ${s.name}`;
        expect(s.matchers.get('instance'), where).toEqual(['=~', '$instance']);
        if (HAS_DATNAME.test(s.name)) expect(s.matchers.get('datname'), where).toEqual(['=~', '$datname']);
        if (HAS_DATABASE.test(s.name)) expect(s.matchers.get('database'), where).toEqual(['=~', '$datname']);
      }
    }
  });

  it('uses only $instance, $datname, $__rate_interval (range queries) and $__range (instant queries)', () => {
    for (const { panel, target } of exprsOf(d)) {
      const used = [...target.expr!.matchAll(/\$\{?(\w+)/g)].map((m) => m[1]!);
      for (const v of used) expect(VARIABLES, `${panel}: $${v}`).toContain(v);
      if (used.includes('__range')) expect(target.instant, `${panel}: $__range in a range query`).toBe(true);
      if (used.includes('__rate_interval'))
        expect(target.instant ?? false, `${panel}: $__rate_interval in an instant query`).toBe(false);
    }
  });

  it('uses only metric names that pg-maintd defines', () => {
    const missing: string[] = [];
    for (const { panel, target } of exprsOf(d))
      for (const s of selectorsOf(target.expr!)) if (!resolve(s.name)) missing.push(`${panel}: ${s.name}`);
    expect(missing).toEqual([]);
  });
});

describe('the metric name check', () => {
  it('reads selectors, not functions or label values', () => {
    const s = selectorsOf(
      'sum by (reason) (increase(pgmaintd_backup_failures_total{instance=~"$instance",reason="pg_dump"}[$__rate_interval])) / on () pg_up',
    );
    expect(s.map((x) => x.name)).toEqual(['pgmaintd_backup_failures_total', 'pg_up']);
    expect(s[0]!.matchers.get('reason')).toEqual(['=', 'pg_dump']);
    expect(s[1]!.matchers.size).toBe(0);
  });

  it('knows the names the dashboards need, from every source', () => {
    expect(resolve('pg_up')).toMatch(/^src\/metrics\/pg-up\.ts$/);
    expect(resolve('pg_stat_database_xact_commit')).toMatch(/^src\/metrics\/collectors\/database\.ts/);
    expect(resolve('pg_stat_user_tables_last_autovacuum')).toMatch(/^src\/metrics\/collectors\/tables\.ts/);
    expect(resolve('pg_stat_statements_seconds_total')).toMatch(/statements\.ts$/);
    expect(resolve('pg_settings_max_connections')).toBe('pg_settings of the test server');
    expect(resolve('nodejs_gc_duration_seconds_sum')).toBe('createRegistry()');
  });

  it('fails on a typo', () => {
    for (const typo of [
      'pg_stat_database_xact_comit',
      'pg_stat_activty_count',
      'pgmaintd_backup_last_sucess_timestamp_seconds',
      'pgmaintd_backup_stored_count', // not a histogram: no _count series
      'pg_settings_max_conections',
      'pg_settings_shared_buffers', // exported as pg_settings_shared_buffers_bytes
      'pg_stat_user_tables_last_autovaccum',
      'nodejs_heap_size_used_byte',
      'pg_dump_seconds',
    ])
      expect(resolve(typo), typo).toBeUndefined();
  });
});

describe('PromQL syntax (promtool check rules, where promtool is installed)', () => {
  const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dashboards-');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.skipIf(!promtool)('parses every expression with Grafana variables substituted', () => {
    const substitute = (e: string) =>
      e
        .replaceAll('$instance', '.*')
        .replaceAll('$datname', '.*')
        .replaceAll('$__rate_interval', '1m')
        .replaceAll('$__range', '6h');
    const rules = dashboards.flatMap(([, d]) => exprsOf(d).map(({ target }) => substitute(target.expr!)));
    const file = join(dir, 'rules.yaml');
    writeFileSync(
      file,
      JSON.stringify({
        groups: [
          { name: 'dashboards', rules: rules.map((expr, i) => ({ record: `dashboard_expr_${i}`, expr })) },
        ],
      }),
    );
    const out = execFileSync(promtool!, ['check', 'rules', file], { encoding: 'utf8' });
    expect(out).toContain(`SUCCESS: ${rules.length} rules found`);
  });
});

describe('provisioning', () => {
  const read = (f: string) =>
    parseYaml(readFileSync(join(DASHBOARDS, 'provisioning', f), 'utf8')) as Record<string, unknown>;

  it('has a dashboard provider pointing at a folder', () => {
    const y = read('dashboards.yaml') as { apiVersion: number; providers: Array<Record<string, unknown>> };
    expect(y.apiVersion).toBe(1);
    expect(y.providers).toHaveLength(1);
    expect(y.providers[0]).toMatchObject({
      name: 'pg-maintd',
      type: 'file',
      options: { path: '/var/lib/grafana/dashboards/pg-maintd' },
    });
  });

  it('has a Prometheus data source for the compose stack', () => {
    const y = read('datasource.yaml') as { apiVersion: number; datasources: Array<Record<string, unknown>> };
    expect(y.apiVersion).toBe(1);
    expect(y.datasources).toHaveLength(1);
    expect(y.datasources[0]).toMatchObject({
      type: 'prometheus',
      uid: 'prometheus',
      url: 'http://prometheus:9090',
      access: 'proxy',
    });
  });
});
