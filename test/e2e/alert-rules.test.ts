// The shipped alert rules (deploy/prometheus/pg-maintd.rules.yaml), checked by the real promtool
// (Debian's prometheus package): the rules load, their unit tests pass, every alert carries what an
// on-call engineer needs (severity, summary, description, a runbook_url whose anchor is a heading of
// docs/runbook.md), every alert is unit-tested firing and not firing, and every metric the rules read
// is one pg-maintd exports.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { SETTINGS_SQL, settingMetric, type SettingRow } from '../../src/metrics/collectors/settings.js';
import { adminUrl } from '../support/postgres.js';
import { PROMQL_KEYWORDS } from '../support/promql.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PROM_DIR = join(ROOT, 'deploy', 'prometheus');
const RULES_FILE = join(PROM_DIR, 'pg-maintd.rules.yaml');
const TESTS_DIR = join(PROM_DIR, 'tests');
const RUNBOOK = join(ROOT, 'docs', 'runbook.md');
const RUNBOOK_URL = 'https://github.com/pg-maintd/pg-maintd/blob/main/docs/runbook.md';

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface RuleTest {
  eval_time: string;
  alertname: string;
  exp_alerts?: Array<{ exp_labels?: Record<string, string>; exp_annotations?: Record<string, string> }>;
}

interface TestFile {
  rule_files: string[];
  tests: Array<{ name?: string; alert_rule_test?: RuleTest[] }>;
}

function rules(): Rule[] {
  const doc = parse(readFileSync(RULES_FILE, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

function alerts(): Array<Rule & { alert: string }> {
  return rules().filter((r): r is Rule & { alert: string } => typeof r.alert === 'string');
}

function testFiles(): string[] {
  return readdirSync(TESTS_DIR)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => join(TESTS_DIR, f));
}

/** Runs promtool; fails with what to install when it is missing rather than with ENOENT. */
function promtool(args: string[]): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  if (r.error) {
    throw new Error(
      (r.error as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'promtool is missing: install Prometheus (Debian: apt-get install prometheus; .ci/run does) so that promtool is on the PATH'
        : `promtool ${args.join(' ')} could not run: ${r.error.message}`,
    );
  }
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/**
 * GitHub's heading anchors (github-slugger): lower case; every character that is not a letter, a
 * digit, a mark, a connector (_), a space or a hyphen removed; spaces become hyphens; a repeated slug
 * gets -1, -2... Inline code and emphasis markers go with the punctuation, links keep their text.
 */
function githubSlugs(markdown: string): Set<string> {
  const slugs = new Set<string>();
  const seen = new Map<string, number>();
  let fence: string | undefined;
  for (const line of markdown.split('\n')) {
    const f = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (f) {
      if (!fence) fence = f[1]![0]!;
      else if (f[1]![0] === fence) fence = undefined;
      continue;
    }
    if (fence) continue;
    const h = /^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/.exec(line);
    if (h) {
      const text = h[1]!.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
      const base = text
        .toLowerCase()
        .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
        .replace(/ /g, '-');
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      slugs.add(n === 0 ? base : `${base}-${n}`);
    }
    // explicit HTML anchors count too
    for (const m of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) slugs.add(m[1]!);
  }
  return slugs;
}

/** The metric names an expression reads: label matchers, strings, grouping clauses and ranges removed. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)) {
    const name = m[1]!;
    if (PROMQL_KEYWORDS.has(name)) continue;
    names.add(name);
  }
  return [...names];
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('alert rules (deploy/prometheus)', () => {
  it('promtool check rules accepts the rules file', () => {
    const r = promtool(['check', 'rules', RULES_FILE]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('promtool test rules passes every unit test', () => {
    const files = testFiles();
    expect(files.length).toBeGreaterThan(0);
    // one promtool per file: each has the whole time limit, however many files there are and
    // however busy the machine is (they took a minute together on a quiet one)
    for (const file of files) {
      const r = promtool(['test', 'rules', file]);
      expect(r.status, `${file}\n${r.output}`).toBe(0);
      expect(r.output).not.toMatch(/FAILED/);
    }
  }, 900_000);

  it('every alert has a severity, a summary, a description with values, and a runbook_url', () => {
    const all = alerts();
    expect(all.length).toBeGreaterThanOrEqual(18);
    const names = all.map((a) => a.alert);
    expect(new Set(names).size, 'alert names are unique').toBe(names.length);
    for (const a of all) {
      expect(['critical', 'warning'], `${a.alert}: severity`).toContain(a.labels?.severity);
      expect(a.annotations?.summary?.trim(), `${a.alert}: summary`).toBeTruthy();
      expect(a.annotations?.description, `${a.alert}: description shows values`).toMatch(
        /\{\{[^}]*\$(value|labels)/,
      );
      expect(a.annotations?.runbook_url, `${a.alert}: runbook_url`).toMatch(
        new RegExp(`^${RUNBOOK_URL.replace(/[.]/g, '\\.')}#[a-z0-9_-]+$`),
      );
    }
  });

  it('every runbook_url anchor is a heading of docs/runbook.md (GitHub slugs)', () => {
    const runbook = readFileSync(RUNBOOK, 'utf8');
    const slugs = githubSlugs(runbook);
    for (const a of alerts()) {
      const anchor = a.annotations!.runbook_url!.split('#')[1]!;
      expect(slugs.has(anchor), `${a.alert}: #${anchor} is not a heading of docs/runbook.md`).toBe(true);
    }
    // and the runbook's own links between sections resolve
    const links = [...runbook.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(0);
    expect(links.filter((l) => !slugs.has(l))).toEqual([]);
  });

  it('computes GitHub slugs the way GitHub does', () => {
    const md = [
      '# pg-maintd runbook',
      '## PgMaintdBackupTooOld',
      '## Before you start',
      '### `pg_up` is 0 (PostgreSQL: down?)',
      '## Before you start',
      '```sh',
      '# not a heading',
      '```',
    ].join('\n');
    expect([...githubSlugs(md)]).toEqual([
      'pg-maintd-runbook',
      'pgmaintdbackuptooold',
      'before-you-start',
      'pg_up-is-0-postgresql-down',
      'before-you-start-1',
    ]);
  });

  it('every alert is unit-tested both firing and not firing, and the tests name only real alerts', () => {
    const firing = new Set<string>();
    const quiet = new Set<string>();
    for (const file of testFiles()) {
      const doc = parse(readFileSync(file, 'utf8')) as TestFile;
      expect(doc.rule_files, file).toEqual(['../pg-maintd.rules.yaml']);
      for (const t of doc.tests)
        for (const r of t.alert_rule_test ?? []) {
          if ((r.exp_alerts ?? []).length > 0) {
            firing.add(r.alertname);
            for (const e of r.exp_alerts!)
              expect(e.exp_annotations?.summary, `${file}: ${r.alertname} at ${r.eval_time}`).toBeTruthy();
          } else quiet.add(r.alertname);
        }
    }
    const names = alerts().map((a) => a.alert);
    expect(
      names.filter((n) => !firing.has(n)),
      'alerts never tested firing',
    ).toEqual([]);
    expect(
      names.filter((n) => !quiet.has(n)),
      'alerts never tested not firing',
    ).toEqual([]);
    expect(
      [...firing, ...quiet].filter((n) => !names.includes(n)),
      'tests of unknown alerts',
    ).toEqual([]);
  });

  it('reads only metrics that pg-maintd exports', async () => {
    const src = sourceFiles(join(ROOT, 'src')).map((f) => readFileSync(f, 'utf8'));
    const literal = new Set(
      src.flatMap((s) => [...s.matchAll(/'((?:pg|pgmaintd)_[a-z0-9_]+)'/g)].map((m) => m[1]!)),
    );
    // families built from a template (`pg_replication_slots_${name}`), expanded with the string
    // literals of the same file: the column lists and the calls next to them
    for (const s of src) {
      const words = [...s.matchAll(/'([a-z0-9_]+)'/g)].map((m) => m[1]!);
      for (const m of s.matchAll(/`((?:pg|pgmaintd)_[a-z0-9_]*)\$\{\w+\}([a-z0-9_]*)`/g)) {
        if (m[1] === 'pg_settings_') continue; // PostgreSQL's settings: read from the server below
        for (const w of words) literal.add(`${m[1]}${w}${m[2]}`);
      }
    }
    // pg_stat_database_<column>: the columns are listed in the stat_database collector
    const statDatabase = readFileSync(join(ROOT, 'src', 'metrics', 'collectors', 'database.ts'), 'utf8');
    // pg_settings_<name>: every bool, integer and real setting, named as the settings collector names it
    const client = new pg.Client({ connectionString: adminUrl() });
    await client.connect();
    const settings = new Set<string>();
    try {
      const r = await client.query<SettingRow>(SETTINGS_SQL);
      for (const row of r.rows) {
        const m = settingMetric(row);
        if (m) settings.add(m.name);
      }
    } finally {
      await client.end();
    }
    const PROMETHEUS_OWN = new Set(['up']);
    const unknown: string[] = [];
    const used = new Set<string>();
    for (const r of rules()) {
      for (const name of metricNames(r.expr)) {
        used.add(name);
        const known =
          PROMETHEUS_OWN.has(name) ||
          literal.has(name) ||
          settings.has(name) ||
          (name.startsWith('pg_stat_database_') &&
            statDatabase.includes(`'${name.slice('pg_stat_database_'.length)}'`));
        if (!known) unknown.push(`${r.alert ?? r.record}: ${name}`);
      }
    }
    expect(unknown).toEqual([]);
    expect(used.size).toBeGreaterThan(15);
  });

  it('finds the metric names in an expression', () => {
    expect(
      metricNames(
        'sum without (datname, state) (pg_stat_activity_count{state="idle in transaction"}) / ' +
          '(pg_settings_max_connections - pg_settings_superuser_reserved_connections) > 0.8 ' +
          'unless on (job) max_over_time((timestamp(increase(x_total[10m]) > 0))[26h:5m]) and up{job=~".*"} == 0',
      ).sort(),
    ).toEqual(
      [
        'pg_settings_max_connections',
        'pg_settings_superuser_reserved_connections',
        'pg_stat_activity_count',
        'up',
        'x_total',
      ].sort(),
    );
  });
});
