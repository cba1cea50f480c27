/**
 * A private primary and a streaming hot standby of it (pg_basebackup -R), for the tests of what
 * pg-maintd does on a standby and across a promotion. Both are real servers on their own ports.
 */
import pg from 'pg';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { waitFor } from './daemon.js';
import { startPrivateCluster } from './postgres.js';

export interface StandbyPair {
  primary: LocalCluster;
  standby: LocalCluster;
  stop(): Promise<void>;
}

/** Runs SQL on one database of a cluster as its superuser; the rows. */
export async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(
  cluster: LocalCluster,
  database: string,
  text: string,
): Promise<R[]> {
  const c = new pg.Client({ connectionString: cluster.url(database) });
  await c.connect();
  try {
    return (await c.query<R>(text)).rows;
  } finally {
    await c.end();
  }
}

/** The primary's WAL up to now has been replayed by the standby (what was written is visible there). */
export async function caughtUp(pair: Pick<StandbyPair, 'primary' | 'standby'>): Promise<void> {
  const [row] = await sql<{ lsn: string }>(
    pair.primary,
    'postgres',
    // the insert position, not the write position: the test clusters run with synchronous_commit
    // off, so a commit just acknowledged may still sit in the primary's WAL buffers
    'SELECT pg_current_wal_insert_lsn()::text AS lsn',
  );
  const lsn = row!.lsn;
  await waitFor(
    () =>
      sql<{ ok: boolean }>(
        pair.standby,
        'postgres',
        `SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn AS ok`,
      ),
    (rows) => rows[0]?.ok === true,
    30_000,
  );
}

/**
 * A primary (wal_level=replica, initdb's default pg_hba lets its superuser replicate over
 * loopback) with `databases` created, and a hot standby built from it that has replayed them.
 */
export async function startStandbyPair(
  databases: string[],
  standbySettings: Record<string, string | number> = {},
): Promise<StandbyPair> {
  const primary = await startPrivateCluster({ settings: { wal_level: 'replica', max_wal_senders: 5 } });
  for (const db of databases) await sql(primary, 'postgres', `CREATE DATABASE ${db}`);
  let standby: LocalCluster | undefined;
  try {
    standby = await startPrivateCluster({ replicaOf: primary, settings: standbySettings });
    const pair = { primary, standby };
    await caughtUp(pair);
    return {
      ...pair,
      async stop() {
        await Promise.allSettled([standby!.stop(), primary.stop()]);
      },
    };
  } catch (err) {
    await Promise.allSettled([standby?.stop(), primary.stop()]);
    throw err;
  }
}
