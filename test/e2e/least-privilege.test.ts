// pg-maintd as the documented least-privilege role, not a superuser: it owns the application's
// database (it migrates the schema, so it owns the tables, RLS included), is in pg_monitor (statistics
// of every session and statement) and may CREATEDB (restore drills). Every job must pass as that role.
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { spawnCli, startDaemon, waitFor } from '../support/daemon.js';
import { adminUrl, withDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

describe('the least-privilege role', () => {
  it('migrates, exports every collector, backs up, drills, maintains and passes the doctor, without superuser', async () => {
    const suffix = Math.random().toString(16).slice(2, 8);
    const role = `pgmaintd_lp_${suffix}`;
    const database = `app_lp_${suffix}`;
    const password = `lp-${suffix}-secret`;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}' CREATEDB IN ROLE pg_monitor`);
    await admin.query(`CREATE DATABASE ${database} OWNER ${role}`);
    // pg_stat_statements is not a trusted extension: a DBA creates it (pg-maintd doctor says so)
    const dba = new pg.Client({ connectionString: withDatabase(adminUrl(), database) });
    await dba.connect();
    await dba.query('CREATE EXTENSION pg_stat_statements');
    await dba.end();
    const url = new URL(withDatabase(adminUrl(), database));
    url.username = role;
    url.password = '';
    const env = {
      DATABASE_URL: url.toString(),
      PGPASSWORD: password,
      DB_SSL_MODE: 'disable',
      BACKUP_DIR: tempDir('pgmaintd-lp-'),
      BACKUP_SCHEDULE: 'off',
      BACKUP_VERIFY_SCHEDULE: 'off',
      MAINTENANCE_SCHEDULE: 'off',
      LOG_LEVEL: 'info',
    };
    const run = async (args: string[], extra: Record<string, string> = {}) => {
      const cli = spawnCli(args, { ...env, ...extra });
      const { code } = await cli.exited;
      return { code, out: cli.output() };
    };
    try {
      const super_ = await admin.query<{ rolsuper: boolean }>(
        'SELECT rolsuper FROM pg_roles WHERE rolname = $1',
        [role],
      );
      expect(super_.rows[0]!.rolsuper).toBe(false);

      const migrate = await run(['migrate', 'up']);
      expect(migrate.code, migrate.out).toBe(0);
      const withPassword = new URL(url);
      withPassword.password = password;
      const app = new pg.Client({ connectionString: withPassword.toString() });
      await app.connect();
      await app.query(`INSERT INTO users (email, password_hash) SELECT 'u' || g || '@x', 'h' FROM generate_series(1, 50) g;
        INSERT INTO projects (user_id, name) SELECT id, 'p ' || email FROM users;
        INSERT INTO tasks (project_id, title) SELECT id, 't ' || name FROM projects`);
      await app.end();

      const d = await startDaemon({ ...env, METRICS_INTERVAL: '1s' });
      try {
        const text = await waitFor(
          async () => (await fetch(`${d.base}/metrics`)).text(),
          // the collectors asserted on below have reported (each publishes when its own round ends)
          (t) =>
            /^pg_up 1$/m.test(t) &&
            [...t.matchAll(/^pg_scrape_collector_success\{collector="([a-z_]+)"\} (\d)$/gm)].length >= 10 &&
            ['stat_statements', 'stat_user_tables'].every((c) =>
              new RegExp(`^pg_scrape_collector_success\\{collector="${c}"\\} \\d$`, 'm').test(t),
            ),
          20_000,
          250,
        );
        const failing = [...text.matchAll(/^pg_scrape_collector_success\{collector="([a-z_]+)"\} 0$/gm)].map(
          (m) => m[1],
        );
        expect(failing).toEqual([]);
        expect(text).toMatch(/^pgmaintd_pg_stat_statements_available 1$/m);
        expect(text).toMatch(
          new RegExp(
            `^pg_stat_user_tables_n_tup_ins\\{datname="${database}",schemaname="public",relname="users"\\}`,
            'm',
          ),
        );
      } finally {
        d.child.kill('SIGTERM');
        await d.exited;
      }

      const backup = await run(['backup']);
      expect(backup.code, backup.out).toBe(0);
      const verify = await run(['verify']);
      expect(verify.code, verify.out).toBe(0);
      // the custom format too: the drill leaves pg_stat_statements out of pg_restore's list
      const customBackup = await run(['backup'], { BACKUP_FORMAT: 'custom' });
      expect(customBackup.code, customBackup.out).toBe(0);
      const customVerify = await run(['verify'], { BACKUP_FORMAT: 'custom' });
      expect(customVerify.code, customVerify.out).toBe(0);
      expect(customVerify.out).toMatch(/\.dump\.gz/);
      const maintenance = await run(['maintenance', 'run']);
      expect(maintenance.code, maintenance.out).toBe(0);
      const doctor = await run(['doctor', '--json'], { LOG_LEVEL: 'silent' }); // stdout: the report alone
      const report = JSON.parse(doctor.out) as { findings?: Array<{ id: string; status: string }> };
      const findings = report.findings ?? [];
      expect(findings.find((f) => f.id === 'role.superuser')?.status).toBe('ok');
      expect(findings.find((f) => f.id === 'role.monitoring')?.status).toBe('ok');
      expect(findings.filter((f) => f.status === 'fail')).toEqual([]);
      // nothing of the password in anything pg-maintd printed
      for (const out of [migrate.out, backup.out, verify.out, customVerify.out, maintenance.out, doctor.out])
        expect(out).not.toContain(password);
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
      await admin.end();
    }
  });
});
