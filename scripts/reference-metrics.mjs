#!/usr/bin/env node
// Derives the metric families postgres_exporter exports with its default flags from its source, for
// test/fixtures/postgres-exporter-default-metrics.txt (the test that pg-maintd exports each of them
// reads that file; this script is how it is regenerated for a newer reference).
//
//   node scripts/reference-metrics.mjs <postgres_exporter git dir> [revision] > test/fixtures/postgres-exporter-default-metrics.txt
//
// It reads the Go source with `git show`, so it needs git and a clone, nothing else: the collectors
// enabled in config.DefaultCollectorConfig(), every prometheus.NewDesc of their files (name from
// BuildFQName, labels, and the value type it is sent with), the exporter's built-in metric maps (the
// legacy query path: pg_stat_database_conflicts), and the exporter's own families.
import { execFileSync } from 'node:child_process';

const [gitDir, rev = 'HEAD'] = process.argv.slice(2);
if (!gitDir) {
  console.error('usage: node scripts/reference-metrics.mjs <postgres_exporter git dir> [revision]');
  process.exit(2);
}
const git = (...args) => execFileSync('git', ['--git-dir', gitDir, ...args], { encoding: 'utf8' });
const show = (path) => git('show', `${rev}:${path}`);
const commit = git('rev-parse', rev).trim();
const describe = git('describe', '--tags', rev).trim();

/**
 * Families only a server older than 13 gets (pg-maintd supports 13 to 18): the reference sends them
 * from its pre-10 code paths, in place of the names listed.
 */
const BEFORE_13 = new Map([
  ['pg_replication_slots_pg_xlog_location_diff', 'pg_replication_slots_pg_wal_lsn_diff before PostgreSQL 10'],
  ['pg_stat_replication_pg_xlog_location_diff', 'pg_stat_replication_pg_wal_lsn_diff before PostgreSQL 10'],
]);

// config.go: CollectorX = "name", and which are enabled by default
const config = show('config/config.go');
const collectorConst = new Map(
  [...config.matchAll(/^\s*(Collector\w+)\s*=\s*"(\w+)"/gm)].map((m) => [m[1], m[2]]),
);
const defaults = config.slice(config.indexOf('func DefaultCollectorConfig'));
const enabled = new Set(
  [...defaults.matchAll(/^\s*(Collector\w+):\s*(true|false)/gm)]
    .filter((m) => m[2] === 'true')
    .map((m) => collectorConst.get(m[1])),
);
// collector_names.go: subsystem constants, each a config constant
const names = show('collector/collector_names.go');
const subsystem = new Map(
  [...names.matchAll(/^\s*(\w+)\s*=\s*config\.(Collector\w+)/gm)].map((m) => [
    m[1],
    collectorConst.get(m[2]),
  ]),
);

/** The argument list of the call whose '(' is at `open`, split at its top-level commas. */
function callArgs(src, open) {
  let depth = 0;
  let inStr = null;
  let start = open + 1;
  const args = [];
  for (let i = open; i < src.length; i++) {
    const ch = src[i];
    if (inStr) {
      if (ch === '\\' && inStr === '"') i++;
      else if (ch === inStr) inStr = null;
      continue;
    }
    if (ch === '"' || ch === '`') inStr = ch;
    else if ('([{'.includes(ch)) depth++;
    else if (')]}'.includes(ch)) {
      depth--;
      if (depth === 0) {
        args.push(src.slice(start, i).trim());
        return args.filter((a) => a !== '');
      }
    } else if (ch === ',' && depth === 1) {
      args.push(src.slice(start, i).trim());
      start = i + 1;
    }
  }
  throw new Error('unbalanced call');
}

const stringList = (expr) => [...expr.matchAll(/"([^"]*)"/g)].map((m) => m[1]);

const families = [];
const files = git('ls-tree', '--name-only', rev, 'collector/')
  .split('\n')
  .filter((f) => f.endsWith('.go') && !f.endsWith('_test.go'));
for (const file of files) {
  const src = show(file);
  const reg = /registerCollector\((\w+),/.exec(src);
  if (!reg) continue;
  const collector = subsystem.get(reg[1]);
  if (!enabled.has(collector)) continue;
  const labelVars = new Map(
    [...src.matchAll(/(\w+)\s*=\s*(\[\]string\{[^}]*\})/g)].map((m) => [m[1], stringList(m[2])]),
  );
  const types = new Map(
    [...src.matchAll(/MustNewConstMetric\(\s*(\w+),\s*prometheus\.(\w+)Value/g)].map((m) => [
      m[1],
      m[2].toLowerCase(),
    ]),
  );
  for (const m of src.matchAll(/(\w+)\s*:?=\s*prometheus\.NewDesc\(/g)) {
    const args = callArgs(src, m.index + m[0].length - 1);
    const fq = /BuildFQName\(\s*namespace,\s*(\w+),\s*"(\w+)"/.exec(args[0]);
    if (!fq) continue; // a name built at run time (pg_settings_<name>): listed below
    const name = `pg_${subsystem.get(fq[1])}_${fq[2]}`;
    if (BEFORE_13.has(name)) continue;
    const labels = labelVars.get(args[2]) ?? stringList(args[2]);
    families.push({ name, type: types.get(m[1]) ?? '?', labels, collector });
  }
  if (collector === 'settings') {
    families.push({ name: 'pg_settings_<name>', type: 'gauge', labels: [], collector });
  }
}

// the exporter's built-in metric maps: COUNTER and GAUGE columns are families, LABEL columns labels
const exporter = show('exporter/postgres_exporter.go');
const builtin = exporter.slice(exporter.indexOf('var builtinMetricMaps'));
for (const ns of builtin.matchAll(/"(pg_\w+)":\s*\{\s*map\[string\]ColumnMapping\{([\s\S]*?)\n\t\t\},/g)) {
  const cols = [...ns[2].matchAll(/"(\w+)":\s*\{(\w+),/g)];
  const labels = cols.filter((c) => c[2] === 'LABEL').map((c) => c[1]);
  for (const [, col, usage] of cols) {
    if (usage === 'COUNTER' || usage === 'GAUGE') {
      families.push({
        name: `${ns[1]}_${col}`,
        type: usage.toLowerCase(),
        labels,
        collector: '(built-in map)',
      });
    }
  }
}
// `SELECT * FROM pg_stat_database_conflicts`: a column the map does not name is sent as untyped under
// its own name ("Unknown metric from ..."), so servers that have more columns get more families
const UNMAPPED = { pg_stat_database_conflicts: [['confl_active_logicalslot', 16]] };
for (const [ns, cols] of Object.entries(UNMAPPED)) {
  const labels = families.find((f) => f.name.startsWith(`${ns}_`))?.labels ?? [];
  for (const [col, since] of cols) {
    families.push({
      name: `${ns}_${col}`,
      type: 'untyped',
      labels,
      collector: `(built-in map, PostgreSQL ${since}+)`,
    });
  }
}
// the exporter's own families (pg_exporter_user_queries_load_error only has series with a queries file)
for (const m of exporter.matchAll(
  /prometheus\.New(Gauge|Counter)(Vec)?\(prometheus\.\w+Opts\{([\s\S]*?)\}(?:,\s*\[\]string\{([^}]*)\})?\)/g,
)) {
  const sub = /Subsystem:\s*(\w+)/.exec(m[3]);
  const name = /Name:\s*"(\w+)"/.exec(m[3])[1];
  const fq = sub ? `pg_exporter_${name}` : `pg_${name}`;
  if (fq === 'pg_exporter_user_queries_load_error') continue;
  families.push({
    name: fq,
    type: m[1].toLowerCase(),
    labels: m[4] ? stringList(m[4]) : [],
    collector: '(exporter)',
  });
}
if (exporter.includes('staticLabelName = "static"')) {
  families.push({
    name: 'pg_static',
    type: 'untyped',
    labels: ['version', 'short_version'],
    collector: '(exporter)',
  });
}
const core = show('collector/collector.go');
for (const m of core.matchAll(/BuildFQName\(namespace,\s*"scrape",\s*"(\w+)"\)/g)) {
  families.push({ name: `pg_scrape_${m[1]}`, type: 'gauge', labels: ['collector'], collector: '(exporter)' });
}
// the build info every Prometheus exporter has (client_golang's version collector)
if (show('cmd/postgres_exporter/main.go').includes('versioncollector.NewCollector(exporterName)')) {
  families.push({
    name: 'postgres_exporter_build_info',
    type: 'gauge',
    labels: ['branch', 'goarch', 'goos', 'goversion', 'revision', 'tags', 'version'],
    collector: '(exporter)',
  });
}

// the auth-module configuration file's reload status, always registered
const cfgFile = config.slice(config.indexOf('func NewHandler'));
for (const m of cfgFile.matchAll(/Namespace:\s*"(\w+)",\s*Name:\s*"(\w+)"/g)) {
  families.push({ name: `${m[1]}_${m[2]}`, type: 'gauge', labels: [], collector: '(exporter)' });
}

const seen = new Set();
const lines = [];
for (const f of families.sort((a, b) => a.name.localeCompare(b.name))) {
  if (seen.has(f.name)) continue;
  seen.add(f.name);
  if (f.type === '?') throw new Error(`no value type found for ${f.name}`);
  lines.push(`${f.name} ${f.type} ${f.labels.join(',') || '-'} ${f.collector}`);
}
process.stdout.write(
  [
    `# postgres_exporter ${describe} (commit ${commit}): the metric families it exports with its default`,
    '# flags (collectors enabled in config.DefaultCollectorConfig, the built-in metric maps, the exporter',
    "# own), for PostgreSQL 13 and later. The built-in maps' families and pg_static also carry the constant",
    '# label `server` (host:port of the DSN), left out here as pg-maintd leaves it out everywhere.',
    '# Generated by scripts/reference-metrics.mjs; do not edit by hand.',
    '# name type labels collector',
    ...lines,
    '',
  ].join('\n'),
);
