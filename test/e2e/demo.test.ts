// The README's first command: `pg-maintd demo` starts a throwaway cluster, serves, backs up, and
// cleans everything up on Ctrl-C.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnCli, waitFor } from '../support/daemon.js';
import { tempDir } from '../support/temp.js';

describe('pg-maintd demo', () => {
  it('migrates and fills a throwaway cluster, runs traffic with a lock wait, backs up and drills at once, streams WAL with a first base backup, and stops cleanly on SIGINT', async () => {
    const dir = tempDir('pgmaintd-demo-');
    // polls every second so the test sees the demo's lock wait quickly
    const demo = spawnCli(['demo'], {
      HTTP_PORT: '0',
      BACKUP_DIR: dir,
      WAL_SPOOL_DIR: tempDir('pgmaintd-demo-spool-'),
      LOG_LEVEL: 'info',
      METRICS_INTERVAL: '1s',
    });
    try {
      const out = await waitFor(
        async () => demo.output(),
        (o) => /^ {2}verified {2}\S+/m.test(o),
        90_000,
        100,
      );
      // WAL archiving is on in the demo: a first base backup at once, and the window it opens
      const pitr = await waitFor(
        async () => demo.output(),
        (o) => /^ {2}PITR {6}\S/m.test(o),
        150_000,
        200,
      );
      expect(pitr).toMatch(
        /^ {2}PITR {6}WAL streamed to \S+\/pitr\/; restorable from \d{4}-\d\d-\d\dT\S+Z to about \d{4}-\S+Z /m,
      );
      expect(readdirSync(join(dir, 'pitr'))).toHaveLength(1);
      const metricsUrl = /metrics {3}(http:\/\/\S+\/metrics)/.exec(out)![1]!;
      const base = metricsUrl.replace(/\/metrics$/, '');
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      const metrics = await (await fetch(metricsUrl)).text();
      expect(metrics).toMatch(/^pgmaintd_backup_stored\{database="app"\} 1$/m);
      expect(out).toMatch(
        /^ {2}verified {2}app\/\S+: restored into a scratch database, \d+ tables' row counts match$/m,
      );
      expect(metrics).toMatch(
        /^pg_stat_user_tables_n_live_tup\{datname="app",schemaname="public",relname="users"\} 500$/m,
      );
      // the demo traffic's lock wait shows in the metrics and in one log line naming the blocker
      await waitFor(
        async () => (await fetch(metricsUrl)).text(),
        (t) => /^pgmaintd_blocked_sessions\{datname="app"\} 1$/m.test(t),
        40_000,
        500,
      );
      const blocked = await waitFor(
        async () => demo.lines().find((l) => l.msg === 'session blocked on a lock'),
        (l) => l !== undefined,
        40_000,
        500,
      );
      expect(metrics).toMatch(/^pgmaintd_pg_stat_statements_available 1$/m);
      expect(blocked).toMatchObject({ datname: 'app', blocking: { application: 'demo-app' } });
      const backupPath = /^ {2}backup {4}(\S+)/m.exec(out)![1]!;
      expect(backupPath.startsWith(dir)).toBe(true);
      expect(existsSync(backupPath)).toBe(true);
      expect(existsSync(`${backupPath}.manifest.json`)).toBe(true);
      const dataDir = demo.lines().find((l) => l.msg.startsWith('demo: throwaway'))!.dataDir as string;
      expect(existsSync(dataDir)).toBe(true);

      demo.child.kill('SIGINT');
      expect((await demo.exited).code).toBe(0);
      expect(demo.output()).not.toContain('unhandled promise rejection');
      expect(existsSync(dataDir)).toBe(false); // the cluster is removed
      expect(readdirSync(join(dir, 'app')).filter((f) => f.includes('.partial-'))).toEqual([]);
    } finally {
      demo.child.kill('SIGKILL');
    }
  }, 400_000);
});
