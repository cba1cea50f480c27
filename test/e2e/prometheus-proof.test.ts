// The operations package against a real Prometheus: it scrapes a running pg-maintd (migrated schema,
// traffic with a lock wait, backups, drills and maintenance on short schedules) and evaluates the
// shipped alert rules. Every PromQL expression of every dashboard panel and every alert rule must be
// accepted by the query API and return data, but for the short list below; an alert fires for real.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { startDaemon, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { startPrometheus, type TestPrometheus } from '../support/prometheus.js';
import { PROMQL_KEYWORDS } from '../support/promql.js';
import { tempDir } from '../support/temp.js';

const RULES = join(PACKAGE_ROOT, 'deploy', 'prometheus', 'pg-maintd.rules.yaml');
const DASHBOARDS = join(PACKAGE_ROOT, 'dashboards');

/**
 * Series that are legitimately empty in this test, each with why. A query is exempt when it
 * mentions one of these names (and then only needs to parse).
 */
const EMPTY_HERE: Record<string, string> = {
  pg_replication_lag_seconds: 'the test server is a primary: the lag alert only selects replicas',
  pg_stat_replication_: 'no standby streams from the test server',
  pgmaintd_backup_failures_total: 'no backup fails in this test',
  pg_stat_statements_query_id: 'query text is off by default (METRICS_QUERY_TEXT)',
  pgmaintd_maintenance_lock_timeouts_total: 'nothing holds a conflicting lock while maintenance runs',
  // a substring of every point-in-time recovery series: WAL_ARCHIVE is off in this test (archiving
  // needs a replication slot and takes base backups); the PITR tests check those series
  pgmaintd_wal_: 'WAL_ARCHIVE is off in this test',
  pgmaintd_pitr_: 'WAL_ARCHIVE is off in this test',
  pgmaintd_basebackup_: 'WAL_ARCHIVE is off in this test',
  pg_stat_io_: 'the test server is PostgreSQL 15: pg_stat_io is 16+ (the version-matrix tests read it)',
  // the rule's selector, a substring of no other query: the slot made below keeps its WAL
  'wal_status=~"unreserved|lost"':
    'no slot is past max_slot_wal_keep_size here (the promtool tests cover it)',
};

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
}

function rules(): Rule[] {
  const doc = parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

interface Panel {
  title?: string;
  targets?: Array<{ expr?: string }>;
  panels?: Panel[];
}

/** Every expr of every panel (rows included) of every dashboard, with Grafana's variables filled in. */
function dashboardQueries(): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const file of readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json'))) {
    const d = JSON.parse(readFileSync(join(DASHBOARDS, file), 'utf8')) as { panels: Panel[] };
    const walk = (panels: Panel[]) => {
      for (const p of panels) {
        for (const t of p.targets ?? [])
          if (t.expr) out.push({ where: `${file}: ${p.title ?? '(untitled)'}`, expr: grafanaVars(t.expr) });
        walk(p.panels ?? []);
      }
    };
    walk(d.panels);
  }
  return out;
}

function grafanaVars(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}/g, '1m')
    .replace(/\$__interval|\$\{__interval\}/g, '15s')
    .replace(/\$__range|\$\{__range\}/g, '5m')
    .replace(/"\$\{?(instance|datname|job|database)(:[a-z]+)?\}?"/g, '".*"')
    .replace(/\$\{?(instance|datname|job|database)(:[a-z]+)?\}?/g, '.*');
}

describe('dashboards and alert rules against a real Prometheus', () => {
  let cluster: LocalCluster;
  let prom: TestPrometheus;
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  const sessions: pg.Client[] = [];
  const pgUpAlert = () => rules().find((r) => r.alert && /\bpg_up\b\s*==\s*0/.test(r.expr))!;

  beforeAll(async () => {
    cluster = await startPrivateCluster();
    const admin = new pg.Client({ connectionString: cluster.url('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE app');
    await admin.end();
    const appUrl = cluster.url('app');
    const setup = new pg.Client({ connectionString: appUrl });
    await setup.connect();
    await setup.query('CREATE EXTENSION pg_stat_statements');
    await setup.end();
    // an index a failed concurrent build leaves invalid, in a database the metrics poll and the
    // maintenance job (on app only) does not rebuild: it stays invalid for the whole test
    const other = new pg.Client({ connectionString: cluster.url('postgres') });
    await other.connect();
    try {
      await other.query('CREATE TABLE proof_dupes (v int); INSERT INTO proof_dupes VALUES (1), (1)');
      await expect(
        other.query('CREATE UNIQUE INDEX CONCURRENTLY proof_invalid ON proof_dupes (v)'),
      ).rejects.toThrow(/could not create unique index/);
    } finally {
      await other.end();
    }
    const backups = tempDir('pgmaintd-proof-');
    daemon = await startDaemon({
      DATABASE_URL: cluster.url('app', cluster.user, null),
      PGPASSWORD: cluster.password,
      DB_SSL_MODE: 'disable',
      MIGRATE_ON_START: 'true',
      METRICS_INTERVAL: '1s',
      METRICS_DATABASE_SIZE_INTERVAL: '1s',
      METRICS_LOCK_WAIT_LOG_AFTER: '1s',
      // the estimates are polled every 5 minutes by default: sooner, so the bloat panels have data
      METRICS_COLLECTOR_INTERVALS: 'bloat=1s,invalid_indexes=1s',
      METRICS_DATABASES: 'app,postgres',
      BACKUP_DIR: backups,
      BACKUP_SCHEDULE: '*/4 * * * * *',
      BACKUP_VERIFY_SCHEDULE: '*/6 * * * * *',
      MAINTENANCE_SCHEDULE: '*/5 * * * * *',
    });
    // the migrations run in the background: the schema is there once they are applied
    await daemon.waitForLog((l) => l.msg === 'migrations applied', 30_000);
    // traffic: some rows, an idle-in-transaction session and a lock wait
    const [a, b, c] = await Promise.all(
      [0, 1, 2].map(async () => {
        const s = new pg.Client({ connectionString: appUrl, application_name: 'proof-app' });
        s.on('error', () => undefined); // the server is stopped under them in the alert test
        await s.connect();
        sessions.push(s);
        return s;
      }),
    );
    await a!
      .query(`INSERT INTO users (email, password_hash) SELECT 'u' || g || '@x', 'h' FROM generate_series(1, 200) g;
      INSERT INTO projects (user_id, name) SELECT id, 'p of ' || email FROM users;
      DELETE FROM projects WHERE name LIKE 'p of u1%'`);
    // statistics for the bloat estimates; a standby's slot that nobody consumes
    await a!.query('ANALYZE users; ANALYZE projects');
    await a!.query("SELECT pg_create_physical_replication_slot('proof_standby', true)");
    await b!.query("BEGIN; UPDATE users SET role = 'admin' WHERE email = 'u2@x'");
    void c!.query("UPDATE users SET role = 'x' WHERE email = 'u2@x'").catch(() => undefined);
    // the rules as shipped, but the pg_up alert fires after 1 s instead of its `for`, so the test need not wait
    const doc = parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> };
    for (const g of doc.groups) for (const r of g.rules) if (r.alert === pgUpAlert().alert) r.for = '1s';
    const rulesCopy = join(backups, 'rules.yaml');
    writeFileSync(rulesCopy, stringify(doc));
    prom = await startPrometheus({ targets: [`127.0.0.1:${daemon.port}`], ruleFiles: [rulesCopy] });
    // enough samples for rate() and a backup, a drill and a maintenance run done
    await waitFor(
      async () => {
        const r = await prom.api<{ result: unknown[] }>('query', {
          query:
            'count_over_time(pg_up[1m]) > 8 and on() pgmaintd_backup_verify_last_success_timestamp_seconds > 0 and on() pgmaintd_maintenance_last_duration_seconds > 0' +
            ' and on() pg_bloat_table_bloat_pct and on() pgmaintd_invalid_index_info and on() pg_replication_slots_active',
        });
        return r.result.length;
      },
      (n) => n > 0,
      60_000,
      500,
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled(sessions.map((s) => s.end()));
    daemon?.child.kill('SIGTERM');
    await daemon?.exited;
    await prom?.stop();
    await cluster?.stop();
  });

  it('every dashboard and alert expression parses and returns data (but for the written list)', async () => {
    const queries = [
      ...dashboardQueries(),
      ...rules().map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: r.expr })),
    ];
    expect(queries.length).toBeGreaterThan(30);
    const empty: string[] = [];
    for (const q of queries) {
      const r = await prom.api<{ result: unknown[] }>('query', { query: q.expr }).catch((err: Error) => {
        throw new Error(`${q.where}: ${err.message}\n  ${q.expr}`);
      });
      const exempt = Object.keys(EMPTY_HERE).some((name) => q.expr.includes(name));
      const isAlert = q.where.startsWith('rule ');
      // an alert expression selects what is wrong: empty is "not firing"; its metrics must still have data
      const probe = isAlert ? metricsOf(q.expr) : [q.expr];
      for (const p of probe) {
        const data = isAlert ? await prom.api<{ result: unknown[] }>('query', { query: p }) : r;
        if (data.result.length === 0 && !exempt) empty.push(`${q.where}: ${p}`);
      }
    }
    expect(empty).toEqual([]);
  });

  it('an alert fires for real: the database stops, pg_up goes 0, Prometheus reports the alert firing', async () => {
    const alert = pgUpAlert();
    expect(alert, 'a rule alerting on pg_up == 0').toBeDefined();
    await cluster.stopServer();
    try {
      const firing = await waitFor(
        async () =>
          (await prom.api<{ alerts: Array<{ labels: { alertname: string }; state: string }> }>('alerts'))
            .alerts,
        (alerts) => alerts.some((a) => a.labels.alertname === alert.alert && a.state === 'firing'),
        30_000,
        500,
      );
      expect(firing.find((a) => a.labels.alertname === alert.alert)!.state).toBe('firing');
    } finally {
      await cluster.startServer();
    }
  });
});

/** The metric selectors an expression reads (name plus its {matchers}, if any). */
function metricsOf(expr: string): string[] {
  const out = new Set<string>();
  for (const m of expr.matchAll(/\b([a-z_][a-z0-9_]*)\b(\{[^}]*\})?(?!\s*\()/g)) {
    const name = m[1]!;
    if (!/^(pg|pgmaintd|process|nodejs)_/.test(name) || PROMQL_KEYWORDS.has(name)) continue;
    out.add(`${name}${m[2] ?? ''}`);
  }
  return [...out];
}
