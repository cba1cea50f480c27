// The maintenance job against a real PostgreSQL: what it vacuums and rebuilds, what it leaves alone,
// and that a held lock makes it give up at lock_timeout without queueing the application.
import { spawnSync } from 'node:child_process';
import { Command } from 'commander';
import pg from 'pg';
import { Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { addMaintenanceCommands } from '../../src/cli/maintenance-commands.js';
import { loadConfig, type Config } from '../../src/config/load.js';
import { DbPool } from '../../src/db/pool.js';
import { createLogger } from '../../src/log/logger.js';
import { estimateBloat } from '../../src/maintenance/index-bloat.js';
import { MAINTENANCE_JOB, maintenanceJob } from '../../src/maintenance/job.js';
import { MaintenanceMetrics } from '../../src/maintenance/metrics.js';
import type { PlannedIndex, PlannedTable } from '../../src/maintenance/plan.js';
import { runMaintenance, type MaintenanceReport } from '../../src/maintenance/run.js';
import { MAINTENANCE_APPLICATION_NAME, MaintenanceSession } from '../../src/maintenance/session.js';
import { Scheduler } from '../../src/schedule/scheduler.js';
import { useTestDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();
const logger = createLogger({ level: 'silent', format: 'json' });
const noDefaults = tempDir('maint-cfg-');

function configWith(env: Record<string, string> = {}): Config {
  return loadConfig({
    defaultsDir: noDefaults,
    env: {
      DATABASE_URL: db.url,
      DB_SSL_MODE: 'disable',
      MAINTENANCE_LOCK_TIMEOUT: '1s',
      MAINTENANCE_REINDEX_MIN_SIZE: '1MiB',
      ...env,
    },
  }).config;
}

function newDeps(config = configWith()) {
  const registry = new Registry();
  return { config, logger, registry, metrics: new MaintenanceMetrics(registry, [db.name]) };
}

const run = (deps: ReturnType<typeof newDeps>, opts: Partial<Parameters<typeof runMaintenance>[2]> = {}) =>
  runMaintenance(deps, db.name, { signal: new AbortController().signal, ...opts });

async function metric(registry: Registry, name: string, labels: Record<string, string>) {
  const m = registry.getSingleMetric(name);
  if (!m) return undefined;
  const { values } = await m.get();
  return values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

/** Runs statements in a session of their own that then disconnects, which flushes its statistics. */
async function inSession(...statements: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
  } finally {
    await c.end();
  }
}

interface TableStats {
  n_live_tup: string;
  n_dead_tup: string;
  n_mod_since_analyze: string;
  last_vacuum: Date | null;
  last_analyze: Date | null;
  vacuum_count: string;
  analyze_count: string;
}

async function tableStats(table: string): Promise<TableStats> {
  const r = await db.pool.query<TableStats>(
    `SELECT n_live_tup, n_dead_tup, n_mod_since_analyze, last_vacuum, last_analyze, vacuum_count, analyze_count
       FROM pg_stat_user_tables WHERE relname = $1`,
    [table],
  );
  return r.rows[0]!;
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, what: string, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A table of `rows` rows (autovacuum off, so only the job under test vacuums it), analyzed. */
async function makeTable(name: string, rows: number): Promise<void> {
  await inSession(
    `CREATE TABLE ${name} (id int NOT NULL, payload text) WITH (autovacuum_enabled = false)`,
    `INSERT INTO ${name} SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g`,
  );
  await until(
    () => tableStats(name),
    (s) => Number(s.n_mod_since_analyze) >= rows,
    `${name} insert stats`,
  );
  await inSession(`ANALYZE ${name}`);
  await until(
    () => tableStats(name),
    (s) => Number(s.n_mod_since_analyze) === 0,
    `${name} analyzed`,
  );
}

/** Deletes most rows in a session that then ends, and waits until the dead rows show. */
async function massDelete(name: string, keepEvery: number, rows: number): Promise<void> {
  await inSession(`DELETE FROM ${name} WHERE id % ${keepEvery} <> 0`);
  const dead = rows - Math.floor(rows / keepEvery);
  await until(
    () => tableStats(name),
    (s) => Number(s.n_dead_tup) >= dead,
    `${name} dead rows`,
  );
}

const tableItem = (r: MaintenanceReport, name: string) =>
  r.steps
    .find((s) => s.job === 'vacuum')
    ?.items.find((i) => (i.item as PlannedTable).name === name && i.item.kind === 'table');
const indexItems = (r: MaintenanceReport, name: string) =>
  r.steps.find((s) => s.job === 'reindex')?.items.filter((i) => (i.item as PlannedIndex).name === name) ?? [];
const stepOf = (r: MaintenanceReport, job: 'vacuum' | 'reindex') => r.steps.find((s) => s.job === job)!;

async function indexState(name: string) {
  const r = await db.pool.query<{ valid: boolean; pages: number }>(
    `SELECT i.indisvalid AS valid, c.relpages AS pages
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1`,
    [name],
  );
  return r.rows[0];
}

/** `pg-maintd maintenance run ...` in this process, its stdout captured. */
async function runCli(...args: string[]): Promise<{ out: string; exitCode: number }> {
  const out: string[] = [];
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    out.push(String(chunk));
    return true;
  });
  const savedUrl = process.env.DATABASE_URL;
  const savedExit = process.exitCode;
  process.env.DATABASE_URL = db.url;
  try {
    const program = new Command('pg-maintd').exitOverride();
    addMaintenanceCommands(program);
    await program.parseAsync(
      ['maintenance', 'run', ...args, '--db-ssl-mode', 'disable', '--log-level', 'silent'],
      { from: 'user' },
    );
    return { out: out.join(''), exitCode: Number(process.exitCode ?? 0) };
  } finally {
    write.mockRestore();
    process.exitCode = savedExit;
    if (savedUrl === undefined) delete process.env.DATABASE_URL;
    else process.env.DATABASE_URL = savedUrl;
  }
}

describe('maintenance', () => {
  it('vacuums a table after mass deletes (its dead rows drop) and leaves a table that does not need it alone', async () => {
    await makeTable('churn', 20_000);
    await makeTable('calm', 5_000);
    await massDelete('churn', 10, 20_000);
    const deps = newDeps();
    const report = await run(deps, { steps: ['vacuum'] });

    const churn = tableItem(report, 'churn');
    expect(churn?.item).toMatchObject({ action: 'vacuum_analyze', schema: 'public' });
    expect(churn?.item.why).toMatch(/dead rows 18000 of 20000 \(90%\) >= 20% and >= 1000/);
    expect(churn?.outcome?.status).toBe('done');
    expect(tableItem(report, 'calm')).toBeUndefined();
    expect(stepOf(report, 'vacuum').result).toBe('success');

    const after = await tableStats('churn');
    expect(Number(after.n_dead_tup)).toBe(0);
    expect(after.last_vacuum).not.toBeNull();
    expect(after.last_analyze).not.toBeNull();
    const calm = await tableStats('calm');
    expect(calm.last_vacuum).toBeNull();
    expect(calm.vacuum_count).toBe('0');
    expect(calm.analyze_count).toBe('1');

    const dbl = { database: db.name };
    expect(await metric(deps.registry, 'pgmaintd_maintenance_tables_vacuumed_total', dbl)).toBe(1);
    expect(
      await metric(deps.registry, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'success' }),
    ).toBe(1);
    expect(
      await metric(deps.registry, 'pgmaintd_maintenance_last_success_timestamp_seconds', {
        job: 'vacuum',
        ...dbl,
      }),
    ).toBeGreaterThan(Date.now() / 1000 - 60);

    // nothing left to do: a second run plans nothing
    const again = await run(newDeps(), { steps: ['vacuum'] });
    expect(stepOf(again, 'vacuum').items).toEqual([]);
  });

  it('analyzes, without vacuuming, a table whose statistics are stale but that has no dead rows', async () => {
    await makeTable('grown', 2_000);
    await inSession('INSERT INTO grown SELECT g, md5(g::text) FROM generate_series(2001, 4000) g');
    await until(
      () => tableStats('grown'),
      (s) => Number(s.n_mod_since_analyze) >= 2000,
      'grown stats',
    );
    // "stale" after 1 ms: the last analyze is older than that
    const deps = newDeps(configWith({ MAINTENANCE_ANALYZE_STALE_AFTER: '1' }));
    const report = await run(deps, { steps: ['vacuum'] });
    const item = tableItem(report, 'grown');
    expect(item?.item).toMatchObject({ action: 'analyze' });
    expect(item?.item.why).toMatch(/2000 rows changed since the last analyze/);
    expect(item?.outcome?.status).toBe('done');
    const s = await tableStats('grown');
    expect(s.analyze_count).toBe('2');
    expect(s.vacuum_count).toBe('0');
    expect(
      await metric(deps.registry, 'pgmaintd_maintenance_tables_analyzed_total', { database: db.name }),
    ).toBe(1);
  });

  it('gives up on a locked table at lock_timeout without blocking the application, and retries it next run', async () => {
    await makeTable('locked', 10_000);
    await makeTable('free', 10_000);
    await massDelete('locked', 5, 10_000);
    await massDelete('free', 5, 10_000);

    // another session holds a lock VACUUM conflicts with (as a running VACUUM or CREATE INDEX
    // CONCURRENTLY would)
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE locked IN SHARE UPDATE EXCLUSIVE MODE');
    // the application: any wait for a lock longer than 300 ms fails its statement
    const app = new pg.Client({ connectionString: db.url });
    await app.connect();
    await app.query("SET lock_timeout = '300ms'; SET statement_timeout = '2s'");
    try {
      const deps = newDeps(configWith({ MAINTENANCE_LOCK_TIMEOUT: '1500ms' }));
      const started = performance.now();
      const running = run(deps, { steps: ['vacuum'] });

      // while the maintenance session waits for its lock, the application's reads and writes on the
      // same table, and on another, go through at once
      await until(
        async () =>
          (
            await db.pool.query(
              `SELECT count(*)::int AS n FROM pg_stat_activity
                WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE 'VACUUM%locked%'`,
              [MAINTENANCE_APPLICATION_NAME],
            )
          ).rows[0].n as number,
        (n) => n === 1,
        'the maintenance VACUUM to wait for its lock',
        5_000,
      );
      const appStarted = performance.now();
      await app.query('INSERT INTO locked VALUES (-1, $1)', ['app']);
      await app.query('SELECT count(*) FROM locked');
      await app.query('UPDATE free SET payload = payload WHERE id = 5');
      expect(performance.now() - appStarted).toBeLessThan(1000);
      const blockers = await db.pool.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0
            AND application_name <> $1`,
        [MAINTENANCE_APPLICATION_NAME],
      );
      expect(blockers.rows).toEqual([]);

      const report = await running;
      const seconds = (performance.now() - started) / 1000;
      expect(seconds).toBeGreaterThanOrEqual(1.4);
      expect(seconds).toBeLessThan(6);
      expect(tableItem(report, 'locked')?.outcome?.status).toBe('lock_timeout');
      expect(tableItem(report, 'free')?.outcome?.status).toBe('done');
      expect(stepOf(report, 'vacuum').result).toBe('partial');
      expect(
        await metric(deps.registry, 'pgmaintd_maintenance_lock_timeouts_total', {
          job: 'vacuum',
          database: db.name,
        }),
      ).toBe(1);
      expect(
        await metric(deps.registry, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'partial' }),
      ).toBe(1);
      expect(
        await metric(deps.registry, 'pgmaintd_maintenance_last_success_timestamp_seconds', {
          job: 'vacuum',
          database: db.name,
        }),
      ).toBeUndefined();
      expect((await tableStats('locked')).last_vacuum).toBeNull();
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
      await app.end();
    }

    // the lock is gone: the next run does it
    const next = await run(newDeps(), { steps: ['vacuum'] });
    expect(tableItem(next, 'locked')?.outcome?.status).toBe('done');
    expect(stepOf(next, 'vacuum').result).toBe('success');
    expect((await tableStats('locked')).last_vacuum).not.toBeNull();
  });

  it('cancels the statement in flight when aborted (shutdown) and reports the run as aborted', async () => {
    await makeTable('slowlock', 5_000);
    await massDelete('slowlock', 5, 5_000);
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE slowlock IN SHARE UPDATE EXCLUSIVE MODE');
    try {
      const deps = newDeps(configWith({ MAINTENANCE_LOCK_TIMEOUT: '60s' }));
      const abort = new AbortController();
      const started = performance.now();
      const running = run(deps, { steps: ['vacuum'], signal: abort.signal });
      await until(
        async () =>
          (
            await db.pool.query(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
              [MAINTENANCE_APPLICATION_NAME],
            )
          ).rows[0].n as number,
        (n) => n === 1,
        'the maintenance VACUUM to wait',
        5_000,
      );
      abort.abort(new Error('pg-maintd is shutting down'));
      const report = await running;
      expect((performance.now() - started) / 1000).toBeLessThan(10);
      expect(stepOf(report, 'vacuum').result).toBe('aborted');
      expect(
        await metric(deps.registry, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'aborted' }),
      ).toBe(1);
      // the maintenance session is gone: nothing of it still waits on the server
      await until(
        async () =>
          (
            await db.pool.query(
              'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
              [MAINTENANCE_APPLICATION_NAME],
            )
          ).rows[0].n as number,
        (n) => n === 0,
        'the maintenance session to end',
        5_000,
      );
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
  });

  it('rebuilds an invalid index with REINDEX INDEX CONCURRENTLY, dropping the _ccnew a failed rebuild leaves', async () => {
    await inSession(
      'CREATE TABLE dup (x int) WITH (autovacuum_enabled = false)',
      'INSERT INTO dup SELECT g FROM generate_series(1, 1000) g',
      'INSERT INTO dup VALUES (7), (7)',
    );
    await expect(inSession('CREATE UNIQUE INDEX CONCURRENTLY dup_x ON dup (x)')).rejects.toMatchObject({
      code: '23505',
    });
    expect((await indexState('dup_x'))?.valid).toBe(false);

    // the duplicates are still there: the rebuild fails, and its invalid dup_x_ccnew is dropped
    const first = newDeps();
    const failed = await run(first, { steps: ['reindex'] });
    const [rebuild, ...rest] = indexItems(failed, 'dup_x');
    expect(rebuild?.item.action).toBe('reindex_invalid');
    expect(rebuild?.outcome).toMatchObject({ status: 'failed', code: '23505' });
    expect(rest).toEqual([]);
    const drop = stepOf(failed, 'reindex').items.find((i) => i.item.name.startsWith('dup_x_ccnew'));
    expect(drop?.item.action).toBe('drop_leftover');
    expect(drop?.outcome?.status).toBe('done');
    expect(stepOf(failed, 'reindex').result).toBe('failure');
    const leftovers = await db.pool.query("SELECT relname FROM pg_class WHERE relname LIKE 'dup_x_cc%'");
    expect(leftovers.rows).toEqual([]);
    expect(
      await metric(first.registry, 'pgmaintd_maintenance_invalid_indexes_dropped_total', {
        database: db.name,
      }),
    ).toBe(1);

    // duplicates fixed: the next run rebuilds it, valid
    await inSession('DELETE FROM dup WHERE ctid IN (SELECT ctid FROM dup WHERE x = 7 LIMIT 2)');
    const second = newDeps();
    const fixed = await run(second, { steps: ['reindex'] });
    expect(indexItems(fixed, 'dup_x')[0]?.outcome?.status).toBe('done');
    expect(stepOf(fixed, 'reindex').result).toBe('success');
    expect((await indexState('dup_x'))?.valid).toBe(true);
    expect(
      await metric(second.registry, 'pgmaintd_maintenance_indexes_rebuilt_total', {
        database: db.name,
        reason: 'invalid',
      }),
    ).toBe(1);
  });

  it('gives up a REINDEX CONCURRENTLY that waits for an older transaction at lock_timeout, and drops its _ccnew', async () => {
    await inSession(
      'CREATE TABLE waits (x int) WITH (autovacuum_enabled = false)',
      'CREATE TABLE elsewhere (y int)',
      'INSERT INTO waits SELECT g FROM generate_series(1, 1000) g',
      'INSERT INTO waits VALUES (3)',
    );
    await expect(inSession('CREATE UNIQUE INDEX CONCURRENTLY waits_x ON waits (x)')).rejects.toMatchObject({
      code: '23505',
    });
    await inSession('DELETE FROM waits WHERE ctid = (SELECT max(ctid) FROM waits WHERE x = 3)');
    // a long transaction on another table: REINDEX CONCURRENTLY waits for its snapshot to go
    const old = new pg.Client({ connectionString: db.url });
    await old.connect();
    await old.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await old.query('SELECT count(*) FROM elsewhere');
    try {
      const deps = newDeps(configWith({ MAINTENANCE_LOCK_TIMEOUT: '500ms' }));
      const started = performance.now();
      const report = await run(deps, { steps: ['reindex'] });
      expect((performance.now() - started) / 1000).toBeLessThan(5);
      expect(indexItems(report, 'waits_x')[0]?.outcome?.status).toBe('lock_timeout');
      const drop = stepOf(report, 'reindex').items.find((i) => i.item.name.startsWith('waits_x_ccnew'));
      expect(drop?.outcome?.status).toBe('done');
      expect(stepOf(report, 'reindex').result).toBe('partial');
      expect(
        await metric(deps.registry, 'pgmaintd_maintenance_lock_timeouts_total', {
          job: 'reindex',
          database: db.name,
        }),
      ).toBe(1);
      expect((await db.pool.query("SELECT 1 FROM pg_class WHERE relname LIKE 'waits_x_cc%'")).rows).toEqual(
        [],
      );
    } finally {
      await old.query('ROLLBACK');
      await old.end();
    }
    const next = await run(newDeps(), { steps: ['reindex'] });
    expect(indexItems(next, 'waits_x')[0]?.outcome?.status).toBe('done');
    expect((await indexState('waits_x'))?.valid).toBe(true);
  });

  it('drops a leftover _ccnew found by the plan, and leaves alone an index a running CREATE INDEX CONCURRENTLY is building', async () => {
    await inSession(
      'CREATE TABLE building (x int) WITH (autovacuum_enabled = false)',
      'INSERT INTO building SELECT g FROM generate_series(1, 1000) g',
    );
    // an open writing transaction makes CREATE INDEX CONCURRENTLY wait, its index invalid meanwhile
    const writer = new pg.Client({ connectionString: db.url });
    await writer.connect();
    await writer.query('BEGIN');
    await writer.query('INSERT INTO building VALUES (0)');
    const builder = new pg.Client({ connectionString: db.url });
    await builder.connect();
    const building = builder.query('CREATE INDEX CONCURRENTLY building_x_ccnew ON building (x)');
    try {
      await until(
        async () =>
          (
            await db.pool.query(
              `SELECT count(*)::int AS n FROM pg_stat_progress_create_index
                WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND phase = 'waiting for writers before build'`,
            )
          ).rows[0].n as number,
        (n) => n === 1,
        'the CREATE INDEX CONCURRENTLY to wait for the writer, its index in the catalog',
        5_000,
      );
      expect((await indexState('building_x_ccnew'))?.valid).toBe(false);
      const report = await run(newDeps(), { steps: ['reindex'] });
      expect(indexItems(report, 'building_x_ccnew')).toEqual([]);
      const skipped = stepOf(report, 'reindex').skipped.find((s) => s.name === 'building_x_ccnew');
      expect(skipped?.why).toMatch(/being built right now by CREATE INDEX CONCURRENTLY \(pid \d+\)/);
    } finally {
      await writer.query('ROLLBACK');
      await writer.end();
      await building;
      await builder.end();
    }
    expect((await indexState('building_x_ccnew'))?.valid).toBe(true);

    // a leftover of a failed REINDEX CONCURRENTLY (an invalid *_ccnew nobody builds) is dropped
    await inSession('INSERT INTO building VALUES (1)');
    await expect(
      inSession('CREATE UNIQUE INDEX CONCURRENTLY building_x_ccnew1 ON building (x)'),
    ).rejects.toMatchObject({
      code: '23505',
    });
    const deps = newDeps();
    const report = await run(deps, { steps: ['reindex'] });
    expect(indexItems(report, 'building_x_ccnew1')[0]).toMatchObject({
      item: { action: 'drop_leftover' },
      outcome: { status: 'done' },
    });
    expect(await indexState('building_x_ccnew1')).toBeUndefined();
    expect(await indexState('building_x_ccnew')).toMatchObject({ valid: true }); // valid: not a leftover
  });

  it('rebuilds a bloated btree index and leaves a healthy one alone (statistics estimate)', async () => {
    for (const t of ['bloaty', 'healthy'])
      await inSession(
        `CREATE TABLE ${t} (id int) WITH (autovacuum_enabled = false)`,
        `INSERT INTO ${t} SELECT g FROM generate_series(1, 200000) g`,
        `CREATE INDEX ${t}_id ON ${t} (id)`,
      );
    await inSession('DELETE FROM bloaty WHERE id % 10 <> 0', 'VACUUM ANALYZE bloaty', 'ANALYZE healthy');
    const before = (await indexState('bloaty_id'))!.pages;

    const session = await MaintenanceSession.open(configWith().db, db.name, configWith().maintenance, logger);
    try {
      const all = await estimateBloat(session, { minBytes: 0, minRatio: 0 });
      const ratio = (n: string) => all.find((e) => e.name === n)?.ratio;
      expect(ratio('bloaty_id')).toBeGreaterThan(0.8);
      expect(ratio('healthy_id')).toBeLessThan(0.1);
    } finally {
      await session.close();
    }

    const deps = newDeps(
      configWith({ MAINTENANCE_REINDEX_MIN_SIZE: '1MiB', MAINTENANCE_REINDEX_BLOAT_RATIO: '0.5' }),
    );
    const report = await run(deps, { steps: ['reindex'] });
    const [bloaty] = indexItems(report, 'bloaty_id');
    expect(bloaty?.item).toMatchObject({ action: 'reindex_bloat' });
    expect(bloaty?.item.why).toMatch(/^estimated bloat \d+% of [\d.]+ MiB >= 50% \(statistics\)$/);
    expect(bloaty?.outcome?.status).toBe('done');
    expect(bloaty?.bloatAfter).toBeLessThan(0.2);
    expect(indexItems(report, 'healthy_id')).toEqual([]);
    expect((await indexState('bloaty_id'))!.pages).toBeLessThan(before / 5);
    expect(
      await metric(deps.registry, 'pgmaintd_maintenance_indexes_rebuilt_total', {
        database: db.name,
        reason: 'bloat',
      }),
    ).toBe(1);
  });

  it('measures bloat candidates with pgstatindex when pgstattuple is installed', async () => {
    await db.pool.query('CREATE EXTENSION IF NOT EXISTS pgstattuple');
    try {
      await inSession(
        'CREATE TABLE measured (id int) WITH (autovacuum_enabled = false)',
        'INSERT INTO measured SELECT g FROM generate_series(1, 200000) g',
        'CREATE INDEX measured_id ON measured (id)',
        'DELETE FROM measured WHERE id % 10 <> 0',
        'VACUUM ANALYZE measured',
      );
      const report = await run(newDeps(), { steps: ['reindex'], dryRun: true });
      const [item] = indexItems(report, 'measured_id');
      expect(item?.item.why).toMatch(/^bloat \d+% of .* \(measured by pgstatindex; estimated \d+%\)$/);
      expect((item?.item as PlannedIndex).measuredBloat).toBeGreaterThan(0.8);
      expect(item?.outcome).toBeUndefined();
    } finally {
      await db.pool.query('DROP EXTENSION pgstattuple');
    }
  });

  it('dry run: prints the plan with reasons and changes nothing', async () => {
    await makeTable('planned', 10_000);
    await massDelete('planned', 4, 10_000);
    await inSession('CREATE TABLE dup2 (x int)', 'INSERT INTO dup2 VALUES (1), (1)');
    await expect(inSession('CREATE UNIQUE INDEX CONCURRENTLY dup2_x ON dup2 (x)')).rejects.toThrow();
    const before = await tableStats('planned');

    const deps = newDeps();
    const report = await run(deps, { dryRun: true });
    expect(report.dryRun).toBe(true);
    expect(tableItem(report, 'planned')?.item.why).toMatch(/dead rows 7500 of 10000 \(75%\)/);
    expect(indexItems(report, 'dup2_x')[0]?.item.action).toBe('reindex_invalid');
    for (const s of report.steps) {
      expect(s.result).toBeUndefined();
      for (const i of s.items) expect(i.outcome).toBeUndefined();
    }
    const after = await tableStats('planned');
    expect(after.n_dead_tup).toBe(before.n_dead_tup);
    expect(after.last_vacuum).toBeNull();
    expect(after.vacuum_count).toBe('0');
    expect((await indexState('dup2_x'))?.valid).toBe(false);
    expect(
      await metric(deps.registry, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'success' }),
    ).toBe(0);

    // and the CLI prints it, exiting 0
    const cli = await runCli('--dry-run');
    const text = cli.out;
    expect(cli.exitCode).toBe(0);
    expect(text).toContain(`${db.name}: vacuum plan (dry run: nothing is changed)`);
    expect(text).toMatch(/VACUUM \(ANALYZE\) "public"\."planned"\n\s+why: dead rows 7500 of 10000/);
    expect(text).toMatch(/REINDEX INDEX CONCURRENTLY "public"\."dup2_x"\n\s+why: invalid/);
    expect((await tableStats('planned')).last_vacuum).toBeNull();
    await inSession('DROP TABLE dup2');

    // a real run through the CLI: the report on stdout, exit 0 when everything planned was done
    const real = await runCli('--job', 'vacuum');
    expect(real.out).toMatch(new RegExp(`^${db.name}: vacuum: success in [\\d.]+s$`, 'm'));
    expect(real.out).toMatch(/done\s+VACUUM \(ANALYZE\) "public"\."planned" \([\d.]+s\)/);
    expect(real.exitCode).toBe(0);

    // a database that is not there: exit 69 (EX_UNAVAILABLE)
    expect((await runCli('--database', 'no_such_database_here')).exitCode).toBe(69);
    expect((await tableStats('planned')).last_vacuum).not.toBeNull();
  });

  it('runs on one replica only: two runners on one database, one runs and the other skips', async () => {
    await makeTable('contended', 5_000);
    await massDelete('contended', 5, 5_000);
    // a held lock keeps the leader busy for its lock_timeout, so the two runs overlap
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE contended IN SHARE UPDATE EXCLUSIVE MODE');
    const config = configWith({ MAINTENANCE_LOCK_TIMEOUT: '1500ms' });
    const replicas = [0, 1].map(() => {
      const registry = new Registry();
      const lockPool = new DbPool(config.db, { name: 'main', logger, max: 2 });
      const scheduler = new Scheduler({ maxStallMs: 5000, registry, logger });
      const metrics = new MaintenanceMetrics(registry, [db.name]);
      scheduler.addJob(maintenanceJob({ config, logger, metrics, lockPool })); // as the daemon does
      return { registry, lockPool, scheduler };
    });
    try {
      const tick = new Date();
      // the scheduler runs the job and counts the skip it returns
      await Promise.all(replicas.map((r) => r.scheduler.trigger(MAINTENANCE_JOB, tick)));
      const skips = await Promise.all(
        replicas.map((r) =>
          metric(r.registry, 'pgmaintd_job_skipped_total', { job: 'maintenance', reason: 'not_leader' }),
        ),
      );
      expect(skips.sort()).toEqual([0, 1]);
      const runs = await Promise.all(
        replicas.map((r) =>
          metric(r.registry, 'pgmaintd_maintenance_runs_total', { job: 'vacuum', result: 'partial' }),
        ),
      );
      expect(runs.sort()).toEqual([0, 1]);
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
      for (const r of replicas) await r.lockPool.stop();
    }
  });

  it('exposes metrics that promtool accepts, each with HELP', async () => {
    const deps = newDeps();
    await run(deps, { steps: ['vacuum'] });
    const text = await deps.registry.metrics();
    for (const name of [
      'pgmaintd_maintenance_runs_total',
      'pgmaintd_maintenance_last_success_timestamp_seconds',
      'pgmaintd_maintenance_last_duration_seconds',
      'pgmaintd_maintenance_tables_vacuumed_total',
      'pgmaintd_maintenance_tables_analyzed_total',
      'pgmaintd_maintenance_indexes_rebuilt_total',
      'pgmaintd_maintenance_invalid_indexes_dropped_total',
      'pgmaintd_maintenance_lock_timeouts_total',
    ])
      expect(text).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(promtool.error, 'promtool is missing: apt-get install prometheus').toBeUndefined();
    expect(`${promtool.stdout}${promtool.stderr}`.trim()).toBe('');
    expect(promtool.status).toBe(0);
  });
});
