// The collectors of postgres_exporter's other default families against real conditions: a slot that
// holds WAL back while WAL is written, an archiver that archives and then fails, a streaming standby
// on its slot, a query canceled on the standby by a recovery conflict, a VACUUM sampled while it runs,
// and table and index I/O. Values are read back from the registry the way a scrape would.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import type { Collector } from '../../src/metrics/collector.js';
import { ReplicationSlotsCollector } from '../../src/metrics/collectors/replication-slots.js';
import { RolesCollector } from '../../src/metrics/collectors/roles.js';
import { StatArchiverCollector } from '../../src/metrics/collectors/stat-archiver.js';
import { StatDatabaseConflictsCollector } from '../../src/metrics/collectors/stat-database-conflicts.js';
import {
  StatProgressVacuumCollector,
  VACUUM_PHASES,
} from '../../src/metrics/collectors/stat-progress-vacuum.js';
import { StatReplicationCollector } from '../../src/metrics/collectors/stat-replication.js';
import { StatUserIndexesCollector } from '../../src/metrics/collectors/stat-user-indexes.js';
import { StatioTablesCollector } from '../../src/metrics/collectors/statio-tables.js';
import { WalCollector } from '../../src/metrics/collectors/wal.js';
import { Poller } from '../../src/metrics/poller.js';
import { metricValue } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { startPrivateCluster, useTestDatabase } from '../support/postgres.js';
import { caughtUp, sql } from '../support/standby.js';

const db = useTestDatabase();
const logger = createLogger({ level: process.env.DBG ? 'debug' : 'silent', format: 'json' });

/** A poller of `make`'s collectors on `url` (polled by hand with pollAll), and its registry. */
function pollerOn(url: string, make: (r: Registry) => Collector[]) {
  const registry = new Registry();
  const p = new Poller({
    db: {
      url,
      ssl: { mode: 'disable', rejectUnauthorized: true },
      pool: { min: 0, max: 2, idleTimeoutMs: 10_000, acquireTimeoutMs: 10_000 },
    },
    registry,
    logger,
    collectors: make(registry),
    intervalMs: 60_000,
    statementTimeoutMs: 10_000,
    lockTimeoutMs: 1000,
  });
  /** Polls until `name{labels}` satisfies `pred`; its value. */
  const until = async (
    name: string,
    labels: Record<string, string>,
    pred: (v: number | undefined) => boolean,
    timeoutMs = 60_000,
  ) =>
    waitFor(
      async () => {
        await p.pollAll();
        return metricValue(registry, name, labels);
      },
      pred,
      timeoutMs,
      100,
    );
  return { registry, p, until };
}

async function success(registry: Registry, collector: string): Promise<number | undefined> {
  return metricValue(registry, 'pg_scrape_collector_success', { collector });
}

describe('a primary with slots and an archiver', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({
      settings: {
        wal_level: 'logical',
        max_slot_wal_keep_size: "'1GB'",
        archive_mode: 'on',
        archive_command: "'true'",
      },
    });
    await sql(
      cluster,
      'postgres',
      `SELECT pg_create_physical_replication_slot('held', true);
       SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')`,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('replication slots: the WAL a slot holds grows as WAL is written, with its safe size and status', async () => {
    const { registry, p, until } = pollerOn(cluster.url(), (r) => [new ReplicationSlotsCollector(r)]);
    try {
      await p.pollAll();
      expect(await success(registry, 'replication_slots')).toBe(1);
      const held = { slot_name: 'held', database: '' };
      const heldType = { slot_name: 'held', slot_type: 'physical' };
      const diff0 = (await metricValue(registry, 'pg_replication_slots_pg_wal_lsn_diff', held))!;
      const lsn0 = (await metricValue(registry, 'pg_replication_slots_slot_current_wal_lsn', heldType))!;
      expect(diff0).toBeGreaterThanOrEqual(0);
      expect(await metricValue(registry, 'pg_replication_slots_active', held)).toBe(0);
      expect(await metricValue(registry, 'pg_replication_slots_slot_is_active', heldType)).toBe(0);
      expect(
        await metricValue(registry, 'pg_replication_slots_wal_status', {
          ...heldType,
          wal_status: 'reserved',
        }),
      ).toBe(1);
      const safe = (await metricValue(registry, 'pg_replication_slots_safe_wal_size_bytes', heldType))!;
      expect(safe).toBeGreaterThan(0);
      // max_slot_wal_keep_size counts from the start of the slot's oldest segment
      expect(safe).toBeLessThanOrEqual(1024 ** 3 + 16 * 1024 ** 2);
      // an inactive slot has no confirmed flush position, as in the reference
      expect(
        await metricValue(registry, 'pg_replication_slots_slot_confirmed_flush_lsn', heldType),
      ).toBeUndefined();
      // the logical slot: its database, its type
      expect(
        await metricValue(registry, 'pg_replication_slots_active', {
          slot_name: 'decoder',
          database: 'postgres',
        }),
      ).toBe(0);
      expect(
        await metricValue(registry, 'pg_replication_slots_slot_is_active', {
          slot_name: 'decoder',
          slot_type: 'logical',
        }),
      ).toBe(0);

      await sql(cluster, 'postgres', 'CREATE TABLE w AS SELECT generate_series(1, 50000) AS i');
      const diff1 = await until('pg_replication_slots_pg_wal_lsn_diff', held, (v) => v! > diff0 + 1_000_000);
      const lsn1 = (await metricValue(registry, 'pg_replication_slots_slot_current_wal_lsn', heldType))!;
      expect(lsn1 - lsn0).toBeGreaterThanOrEqual(diff1! - diff0);
      // what can still be written before the slot is lost shrinks by what was written
      expect(await metricValue(registry, 'pg_replication_slots_safe_wal_size_bytes', heldType)).toBeLessThan(
        safe,
      );
      // a dropped slot's series go
      await sql(cluster, 'postgres', `SELECT pg_drop_replication_slot('decoder')`);
      await until('pg_replication_slots_active', { slot_name: 'decoder' }, (v) => v === undefined);
    } finally {
      await p.stop();
    }
  });

  it(
    'stat_archiver and wal: archived, then failed, WAL files; the segments in pg_wal',
    { timeout: 180_000 },
    async () => {
      const { registry, p, until } = pollerOn(cluster.url(), (r) => [
        new StatArchiverCollector(r),
        new WalCollector(r),
      ]);
      try {
        await p.pollAll();
        expect(await success(registry, 'stat_archiver')).toBe(1);
        expect(await success(registry, 'wal')).toBe(1);
        const segments = (await metricValue(registry, 'pg_wal_segments', {}))!;
        expect(segments).toBeGreaterThan(0);
        expect(await metricValue(registry, 'pg_wal_size_bytes', {})).toBe(segments * 16 * 1024 * 1024);

        const archived0 = (await metricValue(registry, 'pg_stat_archiver_archived_count', {})) ?? 0;
        await sql(
          cluster,
          'postgres',
          'CREATE TABLE a1 (i int); INSERT INTO a1 VALUES (1); SELECT pg_switch_wal()',
        );
        await until('pg_stat_archiver_archived_count', {}, (v) => v! > archived0);
        const age = (await metricValue(registry, 'pg_stat_archiver_last_archive_age', {}))!;
        expect(age).toBeGreaterThanOrEqual(0);
        expect(age).toBeLessThan(600);
        expect(await metricValue(registry, 'pg_stat_archiver_failed_count', {})).toBe(0);

        await sql(cluster, 'postgres', `ALTER SYSTEM SET archive_command = 'false'`);
        await sql(cluster, 'postgres', 'SELECT pg_reload_conf()');
        // the archiver reads the new command once the reload reached it: switch until one fails
        await waitFor(
          async () => {
            await sql(cluster, 'postgres', 'INSERT INTO a1 VALUES (2); SELECT pg_switch_wal()');
            await p.pollAll();
            return metricValue(registry, 'pg_stat_archiver_failed_count', {});
          },
          (v) => v! > 0,
          60_000,
          500,
        );
      } finally {
        await sql(cluster, 'postgres', 'ALTER SYSTEM RESET archive_command');
        await sql(cluster, 'postgres', 'SELECT pg_reload_conf()');
        await p.stop();
      }
    },
  );
});

describe('a primary and a streaming standby on a slot', () => {
  let primary: LocalCluster;
  let standby: LocalCluster;
  beforeAll(async () => {
    primary = await startPrivateCluster({ settings: { wal_level: 'replica', max_wal_senders: 5 } });
    await sql(
      primary,
      'postgres',
      `SELECT pg_create_physical_replication_slot('standby_slot', true);
       CREATE TABLE t AS SELECT generate_series(1, 1000) AS i`,
    );
    // canceled at once on a conflict, and no feedback that would spare the standby's snapshot
    standby = await startPrivateCluster({
      replicaOf: primary,
      settings: {
        primary_slot_name: "'standby_slot'",
        max_standby_streaming_delay: 0,
        hot_standby_feedback: 'off',
      },
    });
    await caughtUp({ primary, standby });
  });
  afterAll(async () => {
    await Promise.allSettled([standby?.stop(), primary?.stop()]);
  });

  it('stat_replication: one series per standby with its slot, the WAL position moving; the slot active', async () => {
    const { registry, p, until } = pollerOn(primary.url(), (r) => [
      new StatReplicationCollector(r),
      new ReplicationSlotsCollector(r),
    ]);
    try {
      const [sender] = await sql<{ pid: number; application_name: string }>(
        primary,
        'postgres',
        'SELECT pid, application_name FROM pg_stat_replication',
      );
      const labels = {
        application_name: sender!.application_name,
        client_addr: '127.0.0.1/32', // inet as text, as the reference has it
        state: 'streaming',
        slot_name: 'standby_slot',
        pid: String(sender!.pid),
      };
      const pos0 = (await until(
        'pg_stat_replication_pg_current_wal_lsn_bytes',
        labels,
        (v) => v !== undefined,
      ))!;
      expect(await success(registry, 'stat_replication')).toBe(1);
      expect(
        await metricValue(registry, 'pg_stat_replication_pg_wal_lsn_diff', labels),
      ).toBeGreaterThanOrEqual(0);
      const text = await registry.metrics();
      expect(
        text.split('\n').filter((l) => l.startsWith('pg_stat_replication_pg_wal_lsn_diff{')),
      ).toHaveLength(1);

      await sql(primary, 'postgres', 'INSERT INTO t SELECT generate_series(1, 20000)');
      await until('pg_stat_replication_pg_current_wal_lsn_bytes', labels, (v) => v! > pos0);
      // the standby replays it: its lag falls back to 0
      await until('pg_stat_replication_pg_wal_lsn_diff', labels, (v) => v === 0);

      const slot = { slot_name: 'standby_slot', slot_type: 'physical' };
      expect(await metricValue(registry, 'pg_replication_slots_slot_is_active', slot)).toBe(1);
      expect(
        await metricValue(registry, 'pg_replication_slots_active', {
          slot_name: 'standby_slot',
          database: '',
        }),
      ).toBe(1);
      // an active physical slot has no confirmed flush position: 0, as the reference's COALESCE gives
      expect(await metricValue(registry, 'pg_replication_slots_slot_confirmed_flush_lsn', slot)).toBe(0);
    } finally {
      await p.stop();
    }
  });

  it(
    'on the standby: no senders or slots of its own, and a query canceled by recovery counts as a conflict',
    { timeout: 180_000 },
    async () => {
      const { registry, p, until } = pollerOn(standby.url(), (r) => [
        new StatReplicationCollector(r),
        new ReplicationSlotsCollector(r),
        new StatDatabaseConflictsCollector(r),
      ]);
      const reader = new pg.Client({ connectionString: standby.url() });
      reader.on('error', () => undefined);
      await reader.connect();
      try {
        await p.pollAll();
        for (const c of ['stat_replication', 'replication_slots', 'stat_database_conflicts']) {
          expect(await success(registry, c), c).toBe(1);
        }
        const text = await registry.metrics();
        expect(text).not.toMatch(/^pg_stat_replication_/m);
        expect(text).not.toMatch(/^pg_replication_slots_/m);
        expect(
          await metricValue(registry, 'pg_stat_database_conflicts_confl_snapshot', { datname: 'postgres' }),
        ).toBe(0);

        // a snapshot on the standby that the primary's vacuum then removes rows from under
        await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await reader.query('SELECT count(*) FROM t');
        const canceled = reader.query('SELECT pg_sleep(300)').then(
          () => 'not canceled',
          (err: { code?: string }) => err.code,
        );
        await sql(primary, 'postgres', 'DELETE FROM t WHERE i <= 500');
        await sql(primary, 'postgres', 'VACUUM t');
        expect(await canceled).toMatch(/^(40001|57P04|57P01)$/);
        await reader.end().catch(() => undefined); // a session flushes its statistics as it ends
        await until('pg_stat_database_conflicts_confl_snapshot', { datname: 'postgres' }, (v) => v! >= 1);
      } finally {
        await reader.end().catch(() => undefined);
        await p.stop();
      }
    },
  );
});

describe('per-database statistics and a running VACUUM', () => {
  it(
    'stat_progress_vacuum: the phase and blocks of a running VACUUM, moving; gone when it ends',
    { timeout: 180_000 },
    async () => {
      await db.pool.query(`CREATE TABLE big (i int, pad text) WITH (autovacuum_enabled = false);
      INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g;
      DELETE FROM big WHERE i % 2 = 0`);
      const { registry, p, until } = pollerOn(db.url, (r) => [new StatProgressVacuumCollector(r)]);
      const vacuum = new pg.Client({ connectionString: db.url });
      vacuum.on('error', () => undefined); // canceled at the end
      await vacuum.connect();
      try {
        const pid = ((await vacuum.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number }).pid;
        // throttled to a crawl, so it is still running while it is sampled; canceled at the end
        await vacuum.query(`SET vacuum_cost_delay = '20ms'; SET vacuum_cost_limit = 1`);
        const running = vacuum.query('VACUUM big').then(
          () => 'finished',
          (err: { code?: string }) => err.code,
        );
        const labels = { datname: db.name, relname: 'big' };
        const scanned0 = (await until(
          'pg_stat_progress_vacuum_heap_blks_scanned',
          labels,
          (v) => v! > 0,
          30_000,
        ))!;
        expect(await success(registry, 'stat_progress_vacuum')).toBe(1);
        const pages = Number(
          (await db.pool.query<{ n: string }>(`SELECT pg_relation_size('big') / 8192 AS n`)).rows[0]!.n,
        );
        expect(await metricValue(registry, 'pg_stat_progress_vacuum_heap_blks', labels)).toBe(pages);
        expect(
          await metricValue(registry, 'pg_stat_progress_vacuum_max_dead_tuples', labels),
        ).toBeGreaterThan(0);
        expect(await metricValue(registry, 'pg_stat_progress_vacuum_index_vacuums', labels)).toBe(0);
        // one phase is 1, the others 0; scanning first
        const phases = await Promise.all(
          VACUUM_PHASES.map((phase) =>
            metricValue(registry, 'pg_stat_progress_vacuum_phase', { ...labels, phase }),
          ),
        );
        expect(phases).toEqual(VACUUM_PHASES.map((ph) => (ph === 'scanning heap' ? 1 : 0)));
        // it moves
        await until('pg_stat_progress_vacuum_heap_blks_scanned', labels, (v) => v! > scanned0);
        expect(
          await metricValue(registry, 'pg_stat_progress_vacuum_num_dead_tuples', labels),
        ).toBeGreaterThan(0);

        await db.pool.query('SELECT pg_cancel_backend($1)', [pid]);
        expect(await running).toBe('57014');
        await until('pg_stat_progress_vacuum_heap_blks', labels, (v) => v === undefined);

        // a table outside public is named as regclass names it under the default search_path
        await db.pool.query(`CREATE SCHEMA "Odd"; CREATE TABLE "Odd"."Big" (i int, pad text)
          WITH (autovacuum_enabled = false);
          INSERT INTO "Odd"."Big" SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
          DELETE FROM "Odd"."Big" WHERE i % 2 = 0`);
        const named = await db.pool.connect();
        let expected: string;
        try {
          await named.query('BEGIN');
          await named.query(`SET LOCAL search_path = "$user", public`);
          expected = (await named.query<{ name: string }>(`SELECT '"Odd"."Big"'::regclass::text AS name`))
            .rows[0]!.name;
          await named.query('COMMIT');
        } finally {
          named.release();
        }
        expect(expected).toBe('"Odd"."Big"');
        const odd = vacuum.query('VACUUM "Odd"."Big"').then(
          () => 'finished',
          (err: { code?: string }) => err.code,
        );
        await until(
          'pg_stat_progress_vacuum_heap_blks',
          { datname: db.name, relname: expected },
          (v) => v! > 0,
        );
        await db.pool.query('SELECT pg_cancel_backend($1)', [pid]);
        expect(await odd).toBe('57014');
      } finally {
        await vacuum.end();
        await p.stop();
      }
    },
  );

  it('statio_user_tables and stat_user_indexes: block reads and hits, index scans, bounded to the largest', async () => {
    await db.pool.query(`
      CREATE TABLE io_small (id int PRIMARY KEY);
      CREATE TABLE io_large (id int PRIMARY KEY, doc text);
      CREATE INDEX io_large_unused ON io_large (doc);
      INSERT INTO io_small VALUES (1);
      ALTER TABLE io_large ALTER COLUMN doc SET STORAGE EXTERNAL;
      INSERT INTO io_large SELECT g, repeat(md5(g::text), 100) FROM generate_series(1, 3000) g;
      -- "largest" is by the planner's estimate: every table of this database analyzed, so io_small is the smallest
      ANALYZE`);
    // every table but the smallest, io_small
    const tables = Number(
      (await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_user_tables')).rows[0]!.n,
    );
    const { registry, p, until } = pollerOn(db.url, (r) => [
      new StatioTablesCollector(r, { limit: tables - 1 }),
      new StatUserIndexesCollector(r, { limit: 2 }),
    ]);
    try {
      const scan = new pg.Client({ connectionString: db.url });
      await scan.connect();
      await scan.query(`SET enable_seqscan = off; SET enable_bitmapscan = off;
        SELECT length(doc) FROM io_large WHERE id = 7; SELECT * FROM io_small WHERE id = 1`);
      await scan.end(); // a session flushes its statistics as it ends
      const large = { datname: db.name, schemaname: 'public', relname: 'io_large' };
      await until('pg_statio_user_tables_toast_blocks_hit', large, (v) => v! > 0);
      expect(await success(registry, 'statio_user_tables')).toBe(1);
      expect(await metricValue(registry, 'pg_statio_user_tables_heap_blocks_hit', large)).toBeGreaterThan(0);
      expect(await metricValue(registry, 'pg_statio_user_tables_idx_blocks_hit', large)).toBeGreaterThan(0);
      expect(await metricValue(registry, 'pg_statio_user_tables_tidx_blocks_hit', large)).toBeGreaterThan(0);
      // the largest tables only: not io_small
      expect(
        await metricValue(registry, 'pg_statio_user_tables_heap_blocks_hit', { relname: 'io_small' }),
      ).toBeUndefined();
      // the one index scanned, and the unused one beside it: 0 scans, its size (the largest two indexes)
      const pkey = { ...large, indexrelname: 'io_large_pkey' };
      await until('pg_stat_user_indexes_idx_scan_total', pkey, (v) => v! >= 1);
      expect(await success(registry, 'stat_user_indexes')).toBe(1);
      const unused = { ...large, indexrelname: 'io_large_unused' };
      expect(await metricValue(registry, 'pg_stat_user_indexes_idx_scan_total', unused)).toBe(0);
      expect(await metricValue(registry, 'pg_index_size_bytes', unused)).toBeGreaterThan(0);
      const text = await registry.metrics();
      expect(
        text.split('\n').filter((l) => l.startsWith('pg_stat_user_indexes_idx_scan_total{')),
      ).toHaveLength(2);
      // last_idx_scan (PostgreSQL 16+) only for an index scanned at least once
      const v = Number((await db.pool.query<{ v: string }>('SHOW server_version_num')).rows[0]!.v);
      expect(
        (await metricValue(registry, 'pg_stat_user_indexes_last_idx_scan_time', pkey)) !== undefined,
      ).toBe(v >= 160000);
      expect(await metricValue(registry, 'pg_stat_user_indexes_last_idx_scan_time', unused)).toBeUndefined();
    } finally {
      await p.stop();
    }
  });

  it('roles: each role’s connection limit, -1 for none', async () => {
    const role = `r_${randomBytes(3).toString('hex')}`;
    await db.pool.query(`CREATE ROLE ${role} CONNECTION LIMIT 7`);
    const { registry, p } = pollerOn(db.url, (r) => [new RolesCollector(r)]);
    try {
      await p.pollAll();
      expect(await metricValue(registry, 'pg_roles_connection_limit', { rolname: role })).toBe(7);
      expect(await metricValue(registry, 'pg_roles_connection_limit', { rolname: 'pg_monitor' })).toBe(-1);
      // a role name is anyone's text: quotes, backslashes and newlines are escaped in the exposition
      await db.pool.query(`CREATE ROLE "${role}_""q\\b\nn" CONNECTION LIMIT 3`);
      await p.pollAll();
      expect(await registry.metrics()).toContain(
        `pg_roles_connection_limit{rolname="${role}_\\"q\\\\b\\nn"} 3\n`,
      );
    } finally {
      await p.stop();
      await db.pool.query(`DROP ROLE ${role}; DROP ROLE IF EXISTS "${role}_""q\\b\nn"`);
    }
  });
});
