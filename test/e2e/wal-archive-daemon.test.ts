// `pg-maintd run` with WAL_ARCHIVE=stream, as a real daemon (dist/) under a non-superuser role with
// REPLICATION: pg_receivewal runs as its child with the password in its environment only (never
// its command line, never the log), WAL reaches the store, /metrics shows the archiver, and
// SIGTERM ends pg_receivewal with the daemon.
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { cliEnv, sample, scrapeMetrics, startDaemon, waitFor } from '../support/daemon.js';
import { startPrivateCluster, withDatabase } from '../support/postgres.js';
import { ProcSampler, readEnviron, type ProcSeen } from '../support/secret-scan.js';
import { tempDir } from '../support/temp.js';

const suffix = randomBytes(3).toString('hex');
const ROLE = `walrole_${suffix}`;
const DATABASE = `walapp_${suffix}`;
// '+', '/' and '=' make the URL-encoded form differ from the raw one
const PASSWORD = `pw-${randomBytes(8).toString('hex')}+/=`;

let cluster: LocalCluster;

async function sql(url: string, text: string): Promise<Record<string, unknown>[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text)).rows;
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  cluster = await startPrivateCluster({
    settings: { wal_level: 'replica', max_wal_senders: 5, max_replication_slots: 5 },
  });
  await sql(cluster.url(), `CREATE ROLE ${ROLE} LOGIN REPLICATION PASSWORD '${PASSWORD}'`);
  await sql(cluster.url(), `CREATE DATABASE ${DATABASE} OWNER ${ROLE}`);
});

afterAll(async () => {
  await cluster?.stop();
});

function roleUrl(): string {
  const u = new URL(withDatabase(cluster.url(), DATABASE));
  u.username = ROLE;
  u.password = encodeURIComponent(PASSWORD);
  return u.toString();
}

describe('pg-maintd run with WAL_ARCHIVE=stream', { timeout: 240_000 }, () => {
  it('streams WAL to the store through pg_receivewal, its password only in its environment', async () => {
    const store = tempDir('pgmaintd-walstore-');
    const receivers: ProcSeen[] = [];
    const environs: Array<Map<string, string>> = [];
    const sampler = new ProcSampler(50, (p) => {
      if (!p.cmdline.includes('pg_receivewal')) return;
      receivers.push(p);
      const e = readEnviron(p.pid);
      // other test files run their own archivers at the same time: this daemon's connect as ROLE
      if (e && e.env.get('PGUSER') === ROLE) environs.push(e.env);
    });
    sampler.start();
    const d = await startDaemon(
      cliEnv(roleUrl(), store, {
        WAL_ARCHIVE: 'stream',
        WAL_SLOT: `pgmaintd_${suffix}`,
        WAL_SPOOL_DIR: tempDir('pgmaintd-spool-'),
        WAL_PARTIAL_UPLOAD_INTERVAL: '1s',
        PITR_HEARTBEAT_INTERVAL: '1s',
        PG_CLIENT_BIN_DIR: cluster.binaries.binDir,
        BASEBACKUP_SCHEDULE: 'off',
        PITR_DRILL_SCHEDULE: 'off',
      }),
    );
    try {
      await waitFor(
        async () => sample(await scrapeMetrics(d), 'pgmaintd_wal_archiver_up') ?? 0,
        (v) => v === 1,
        60_000,
        250,
      );
      await sql(roleUrl(), 'CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g');
      await sql(cluster.url(), 'SELECT pg_switch_wal()');
      await waitFor(
        async () => sample(await scrapeMetrics(d), 'pgmaintd_wal_uploaded_total', { kind: 'segment' }) ?? 0,
        (v) => v >= 1,
        60_000,
        250,
      );
      const metrics = await scrapeMetrics(d);
      expect(sample(metrics, 'pgmaintd_pitr_heartbeat_last_timestamp_seconds')).toBeGreaterThan(0);
      expect(sample(metrics, 'pgmaintd_wal_spool_free_bytes')).toBeGreaterThan(0);
      const walDir = readdirSync(store, { recursive: true }).map(String);
      expect(walDir.some((f) => /wal\/[0-9A-F]{24}-[0-9a-f]{64}\.gz$/.test(f))).toBe(true);

      sampler.sample();
      expect(receivers.length).toBeGreaterThanOrEqual(1);
      for (const p of receivers) {
        expect(p.cmdline).not.toContain(PASSWORD);
        expect(p.cmdline).not.toContain(encodeURIComponent(PASSWORD));
      }
      expect(environs.length).toBeGreaterThanOrEqual(1);
      for (const env of environs) {
        expect(env.get('PGPASSWORD')).toBe(PASSWORD);
        expect(env.get('PGAPPNAME')).toBe('pg-maintd-walreceiver');
        expect(env.get('PGUSER')).toBe(ROLE);
      }
    } finally {
      sampler.stop();
      d.child.kill('SIGTERM');
      await d.exited;
    }
    expect(d.output()).not.toContain(PASSWORD);
    expect(d.output()).not.toContain(encodeURIComponent(PASSWORD));
    // pg_receivewal went with the daemon
    const left = await sql(
      cluster.url(),
      `SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name = 'pg-maintd-walreceiver'`,
    );
    expect(left[0]!.n).toBe(0);
  });
});
