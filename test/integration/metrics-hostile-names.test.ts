// Names are anyone's text: databases, schemas, tables, indexes and roles named with quotes,
// backslashes, newlines, `@`, 63-byte names and bytes that are not UTF-8 (a SQL_ASCII database) pass
// through every collector into an exposition that Prometheus and promtool read whole: every label
// escaped, and no series twice (two names that decode to the same text must not become duplicates,
// which Prometheus drops).
import { spawnSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
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
const UNNAMEABLE = 'to_be_bytes';

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
    // a database whose name is those bytes: only a SQL_ASCII database takes such a name, and
    // RENAME (unlike CREATE DATABASE) may run in the DO block that builds it
    await admin.query(`CREATE DATABASE ${UNNAMEABLE}`);
    await c.query(`DO $$ BEGIN
      EXECUTE format('ALTER DATABASE %I RENAME TO %I', '${UNNAMEABLE}', convert_from('\\x64ff'::bytea, 'SQL_ASCII'));
    END $$`);
    await c.end();
  } finally {
    await admin.end();
  }
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

/** Log lines as objects. */
function capture() {
  const stream = new PassThrough();
  const lines: Array<Record<string, unknown>> = [];
  stream.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n').filter(Boolean))
      lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return { logger: createLogger({ level: 'info', format: 'json', destination: stream }), lines };
}

/** A poller of every collector (stat_user_indexes too) over every database, as the daemon builds it. */
function everything(logger = createLogger({ level: process.env.DBG ? 'debug' : 'silent', format: 'json' })) {
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

  // node-postgres always asks for UTF8, and in a SQL_ASCII database the server refuses rows holding a
  // name that is not UTF-8 (22021), as it does to postgres_exporter (lib/pq asks for UTF8 too): the
  // per-database collectors fail in that database, say so once with the server's reason, and the
  // other databases' series are unaffected (the test above)
  it('a SQL_ASCII database with names that are not UTF-8: its per-database collectors fail, saying why', async () => {
    const { logger, lines } = capture();
    const { registry, poller } = everything(logger);
    try {
      await poller.pollAll();
      const tables = poller.collectorHealth().find((h) => h.collector === 'stat_user_tables')!;
      expect(tables.ok).toBe(false);
      expect(tables.error).toMatch(
        /22021 \(database "latin_bytes"\): invalid byte sequence for encoding "UTF8"/,
      );
      expect(
        await metricValue(registry, 'pg_stat_user_tables_n_live_tup', {
          datname: HOSTILE[0]!,
          schemaname: HOSTILE[0]!,
          relname: HOSTILE[0]!,
        }),
      ).toBeGreaterThan(0);
      const warned = lines.filter((l) => l.database === LATIN && l.collector === 'stat_user_tables');
      expect(warned.map((l) => l.code)).toEqual(['22021']);
    } finally {
      await poller.stop();
    }
  }, 120_000);

  it('a database whose name is not UTF-8: failing, said once with what to do, not forgotten and found again each round', async () => {
    const { logger, lines } = capture();
    const { poller } = everything(logger);
    try {
      for (let i = 0; i < 3; i++) await poller.pollAll();
      const unnamed = 'd\ufffd'; // how the name reads back
      const forgotten = lines.filter((l) => l.database === unnamed && /no longer listed/.test(String(l.msg)));
      expect(forgotten).toHaveLength(1); // once, by the first poll that did not find it
      const said = lines.filter(
        (l) => l.database === unnamed && /not found by the name it reads back as/.test(String(l.msg)),
      );
      expect(said.length).toBeGreaterThan(0);
      expect(new Set(said.map((l) => l.collector)).size).toBe(said.length); // once per collector
      const tables = poller.collectorHealth().find((h) => h.collector === 'stat_user_tables')!;
      expect(tables.error).toContain(`database_missing 3D000 (database ${JSON.stringify(unnamed)})`);
    } finally {
      await poller.stop();
    }
  }, 120_000);
});
