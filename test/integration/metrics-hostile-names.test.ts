// Names are anyone's text: databases, schemas, tables, indexes and roles named with quotes,
// backslashes, newlines, `@`, 63-byte names and bytes that are not UTF-8 (a SQL_ASCII database) pass
// through every collector into an exposition that Prometheus and promtool read whole: every label
// escaped, and no series twice (two names that decode to the same text must not become duplicates,
// which Prometheus drops).
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { Exposition } from '../../src/metrics/exposition.js';
import { pollerFor } from '../../src/metrics/poller-for.js';
import { CountingRegistry } from '../../src/metrics/registry.js';
import { metricValue } from '../support/backup.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const HOSTILE = ['we"ird', 'back\\slash', 'new\nline', "it's", 'at@sign', 'é'.repeat(31) + 'x'];
const LATIN = 'latin_bytes';

let cluster: LocalCluster;

/** A connection to `database`, named as it is (a URL would need it encoded). */
const client = (database: string) =>
  new pg.Client({
    host: '127.0.0.1',
    port: cluster.port,
    user: cluster.user,
    password: cluster.password,
    database,
  });

beforeAll(async () => {
  cluster = await startPrivateCluster();
  const admin = new pg.Client({ connectionString: cluster.url('postgres') });
  await admin.connect();
  try {
    for (const name of HOSTILE) {
      const db = pg.escapeIdentifier(name);
      await admin.query(`CREATE DATABASE ${db}`);
      await admin.query(`CREATE ROLE ${db}`);
      const c = client(name);
      await c.connect();
      await c.query(`CREATE SCHEMA ${db}`);
      await c.query(`CREATE TABLE ${db}.${db} (id int PRIMARY KEY, v text)`);
      await c.query(`CREATE INDEX ${pg.escapeIdentifier(`v_${name}`)} ON ${db}.${db} (v)`);
      await c.query(`INSERT INTO ${db}.${db} SELECT g, g::text FROM generate_series(1, 100) g`);
      await c.query(`ANALYZE`);
      await c.end();
    }
    // a legacy database whose names are bytes, not UTF-8: two tables whose names differ only in a
    // byte that is not UTF-8 read back as the same text (U+FFFD)
    await admin.query(
      `CREATE DATABASE ${LATIN} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`,
    );
    const c = client(LATIN);
    await c.connect();
    await c.query(`DO $$
      DECLARE b bytea;
      BEGIN
        FOREACH b IN ARRAY ARRAY['\\x74ff'::bytea, '\\x74fe'::bytea] LOOP
          EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY)', convert_from(b, 'SQL_ASCII'));
          EXECUTE format('INSERT INTO %I SELECT generate_series(1, 10)', convert_from(b, 'SQL_ASCII'));
        END LOOP;
      END $$`);
    await c.query('ANALYZE');
    await c.end();
  } finally {
    await admin.end();
  }
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

/** A poller of every collector (stat_user_indexes too) over every database, as the daemon builds it. */
function everything() {
  const { config } = loadConfig({
    defaultsDir: tempDir('cfg-none-'),
    env: {
      DATABASE_URL: cluster.url('postgres'),
      DB_SSL_MODE: 'disable',
      METRICS_DATABASES: '*',
      METRICS_COLLECTOR_INTERVALS: 'stat_user_indexes=1m',
    },
  });
  const registry = new CountingRegistry();
  const logger = createLogger({ level: process.env.DBG ? 'debug' : 'silent', format: 'json' });
  return { registry, poller: pollerFor(config, registry, logger) };
}

describe('hostile names in the exposition', () => {
  it('every collector in every database: escaped labels, no duplicate series, promtool finds nothing', async () => {
    const { registry, poller } = everything();
    try {
      await poller.pollAll();
      await poller.pollAll();
      const text = (await new Exposition(registry).render()).toString();
      for (const name of HOSTILE)
        expect(
          await metricValue(registry, 'pg_stat_user_tables_n_live_tup', {
            datname: name,
            schemaname: name,
            relname: name,
          }),
          name,
        ).toBeGreaterThan(0);
      // the SQL_ASCII database fails the per-database ones: see below
      for (const c of ['database', 'stat_database', 'database_wraparound', 'roles', 'stat_activity'])
        expect(await metricValue(registry, 'pg_scrape_collector_success', { collector: c }), c).toBe(1);
      expect(text).toContain('datname="new\\nline"');
      expect(text).toContain('datname="we\\"ird"');
      expect(text).toContain('datname="back\\\\slash"');
      // every series once
      const series = text.split('\n').filter((l) => l && !l.startsWith('#'));
      const names = series.map((l) => l.slice(0, l.lastIndexOf(' ')));
      const dup = names.filter((n, i) => names.indexOf(n) !== i);
      expect(dup).toEqual([]);
      const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(run.error).toBeUndefined();
      expect(`${run.stdout}${run.stderr}`).not.toMatch(/error|duplicate/i);
    } finally {
      await poller.stop();
    }
  }, 120_000);

  // KNOWN DEFECT (reported, not fixed): in a SQL_ASCII database, a name that is not UTF-8 makes the
  // server refuse the rows (22021 invalid byte sequence for encoding "UTF8": node-postgres always asks
  // for UTF8), so every per-database collector fails in that database and its tables' series are gone
  // for good. it.fails: this test starts failing (and must become a plain it) once that is fixed.
  it.fails(
    'a SQL_ASCII database with names that are not UTF-8: its table statistics still arrive',
    async () => {
      const { registry, poller } = everything();
      try {
        await poller.pollAll();
        const text = (await new Exposition(registry).render()).toString();
        expect(text).toMatch(/^pg_stat_user_tables_n_live_tup\{datname="latin_bytes",/m);
        const series = text.split('\n').filter((l) => l && !l.startsWith('#'));
        const names = series.map((l) => l.slice(0, l.lastIndexOf(' ')));
        expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
      } finally {
        await poller.stop();
      }
    },
    120_000,
  );
});
