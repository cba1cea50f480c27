// The live /metrics output of a running daemon, checked by the real promtool (Debian's prometheus
// package). The names that postgres_exporter and prom-client fix (pg_stat_database_xact_commit is a
// counter without _total; pg_locks_count is a gauge ending in _count) are kept for dashboard
// compatibility; promtool's naming lints on exactly those are allowed, and anything else fails.
import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { startDaemon, waitFor } from '../support/daemon.js';
import { useTestDatabase } from '../support/postgres.js';

const db = useTestDatabase();

const NAMING_LINT =
  /^(\S+) (non-counter metrics should not have "_total" suffix|counter metrics should have "_total" suffix|non-histogram and non-summary metrics should not have "_count" suffix)$/;

describe('promtool check metrics on the live /metrics', () => {
  it('finds no problem beyond the naming lints that compatibility with postgres_exporter requires', async () => {
    const promtool = spawnSync('promtool', ['--version']);
    expect(promtool.error, 'promtool is missing: apt-get install prometheus (.ci/run does)').toBeUndefined();
    await db.pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    const d = await startDaemon({
      DATABASE_URL: db.url,
      DB_SSL_MODE: 'disable',
      METRICS_INTERVAL: '1s',
      BACKUP_SCHEDULE: 'off',
    });
    try {
      const text = await waitFor(
        async () => (await fetch(`${d.base}/metrics`)).text(),
        (t) =>
          /^pg_stat_statements_calls_total\{/m.test(t) &&
          /^pg_stat_user_tables_n_live_tup|^pg_settings_max_connections /m.test(t) &&
          /^pg_roles_connection_limit\{/m.test(t),
        15_000,
        200,
      );
      const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      const problems = `${run.stdout}${run.stderr}`.split('\n').filter(Boolean);
      const unexpected = problems.filter((line) => {
        const m = NAMING_LINT.exec(line);
        return !m || !/^(pg_|nodejs_)/.test(m[1]!);
      });
      expect(unexpected).toEqual([]);
      // the families of the reference's other default collectors are in the live output too
      for (const family of [
        'pg_exporter_scrapes_total',
        'pg_roles_connection_limit',
        'pg_wal_segments',
        'pg_stat_archiver_archived_count',
        'pg_stat_database_conflicts_confl_snapshot',
      ]) {
        expect(text, family).toMatch(new RegExp(`^${family}(\\{| )`, 'm'));
      }
      // every family has HELP text and a TYPE
      const types = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
      const helps = new Set([...text.matchAll(/^# HELP (\S+) \S/gm)].map((m) => m[1]));
      expect(types.length).toBeGreaterThan(50);
      for (const t of types) expect(helps.has(t), `HELP for ${t}`).toBe(true);
      // and the exposition format itself parses (promtool exits 3 for lint findings only, 1 for errors)
      expect(run.status === 0 || run.status === 3).toBe(true);
      expect(execFileSync('promtool', ['--version'], { encoding: 'utf8' })).toMatch(/promtool/);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });
});
