// Point-in-time recovery against PostgreSQL 13, 14 and 15 (the embedded 13 and 14, the local 15):
// WAL archived by the real archive_command (`wal-push`), a base backup by the local pg_basebackup 15,
// a `--latest` restore replayed by a server of the cluster's own major (PG_SERVER_BIN_DIR). For 16,
// 17 and 18 the only pg_basebackup here (15) is too old: the base backup must be refused with what
// to do, and nothing stored.
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import { CLI, runCli, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir, tempPath } from '../support/temp.js';

const pgUser = (() => {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
})();

/** A cluster of `major` archiving through `wal-push` into a store of its own. */
async function archivingCluster(major: number) {
  const store = tempDir(`pitr-matrix-${major}-`);
  // wal-push runs as the server's user: the store must be its to write
  chownSync(store, pgUser.uid, pgUser.gid);
  const binaries = findServerBinaries(major);
  const cluster = await startPrivateCluster({
    binaries,
    // the socket says `peer`, as Debian's default does: the restored copy has the same rules, and
    // pg-maintd (root, with the URL's role) must still follow its recovery
    ...(major === 15
      ? {
          hba: [
            'local all all peer',
            'local replication all peer',
            'host all all 127.0.0.1/32 md5',
            'host replication all 127.0.0.1/32 md5',
            'host all all ::1/128 md5',
          ],
        }
      : {}),
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'BACKUP_DIR=${store} ${process.execPath} ${CLI} wal-push %p'`,
      wal_recycle: 'off',
    },
  });
  const client = new pg.Client({ connectionString: cluster.url() });
  await client.connect();
  const q = async <T extends pg.QueryResultRow>(sql: string) => (await client.query<T>(sql)).rows;
  const sysid = (await q<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!
    .id;
  const env = { DATABASE_URL: cluster.url(), BACKUP_DIR: store, DB_SSL_MODE: 'disable' };
  /** Switches to a new segment and waits until the one just finished is in the store. */
  const archiveNow = async () => {
    const f = (await q<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f'))[0]!.f;
    await waitFor(
      () =>
        q<{ w: string | null; failed: string | null }>(
          'SELECT last_archived_wal AS w, last_failed_wal AS failed FROM pg_stat_archiver',
        ),
      (r) => r[0]!.w !== null && r[0]!.w >= f,
      120_000,
      100,
    );
    return f;
  };
  return { store, binaries, cluster, client, q, sysid, env, archiveNow };
}

/** The server a restore left running on `dir`, stopped. */
function stopRestored(binDir: string, dir: string) {
  if (!existsSync(join(dir, 'postmaster.pid'))) return;
  spawnSync(join(binDir, 'pg_ctl'), ['-D', dir, '-m', 'immediate', '-w', 'stop'], {
    ...pgUser,
    cwd: '/',
    stdio: 'ignore',
  });
}

function portOf(out: string): number {
  const m = /port=(\d+)/.exec(out);
  if (!m) throw new Error(`no port in the restore's output:\n${out}`);
  return Number(m[1]);
}

describe.each([13, 14, 15])('PostgreSQL %i: archive, base backup, restore', (major) => {
  let rig: Awaited<ReturnType<typeof archivingCluster>>;
  beforeAll(async () => {
    rig = await archivingCluster(major);
    await rig.q('CREATE TABLE rows_kept(n int PRIMARY KEY)');
    await rig.q('INSERT INTO rows_kept SELECT generate_series(1, 100)');
    await rig.archiveNow(); // the store's WAL folder is the server user's before pg-maintd writes beside it
  }, 180_000);
  afterAll(async () => {
    await rig?.client.end().catch(() => undefined);
    await rig?.cluster.stop();
  });

  it('restores with --latest every row written before and after the base backup', async () => {
    const b = await runCli(['basebackup'], rig.env);
    expect(b.code, b.out).toBe(0);
    const base = join(rig.store, 'pitr', rig.sysid, 'base');
    const manifestName = readdirSync(base).find((n) => n.endsWith('.manifest.json'))!;
    const manifest = JSON.parse(readFileSync(join(base, manifestName), 'utf8')) as {
      serverVersionNum: number;
    };
    expect(Math.floor(manifest.serverVersionNum / 10000)).toBe(major);

    await rig.q('INSERT INTO rows_kept SELECT generate_series(101, 250)');
    await rig.archiveNow();

    const dir = tempPath(`pitr-matrix-restore-${major}-`);
    try {
      const r = await runCli(['pitr', 'restore', '--data-dir', dir, '--latest', '--start'], {
        ...rig.env,
        PG_SERVER_BIN_DIR: rig.binaries.binDir,
      });
      expect(r.code, r.out).toBe(0);
      expect(r.out).toContain('recovery is complete');
      const c = new pg.Client({
        connectionString: rig.cluster.url().replace(/:\d+\//, `:${portOf(r.out)}/`),
      });
      await c.connect();
      try {
        const got = (
          await c.query<{ n: string; s: string; v: number }>(
            "SELECT count(*) AS n, sum(n) AS s, current_setting('server_version_num')::int / 10000 AS v FROM rows_kept",
          )
        ).rows[0]!;
        expect(got).toEqual({ n: '250', s: String((250 * 251) / 2), v: major });
      } finally {
        await c.end();
      }
      expect(existsSync(join(dir, 'PGMAINTD_RESTORE_INCOMPLETE'))).toBe(false);
    } finally {
      stopRestored(rig.binaries.binDir, dir);
    }
  }, 300_000);
});

describe.each([16, 17, 18])('PostgreSQL %i: pg_basebackup 15 is too old', (major) => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({ binaries: findServerBinaries(major) });
  }, 180_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses the base backup, saying the client is too old and what to do, storing nothing', async () => {
    const store = tempDir(`pitr-matrix-${major}-`);
    const r = await runCli(['basebackup'], {
      DATABASE_URL: cluster.url(),
      BACKUP_DIR: store,
      DB_SSL_MODE: 'disable',
    });
    expect(r.code, r.out).toBe(69);
    expect(r.out).toMatch(new RegExp(`pg_basebackup 15\\.[^\\n]* is older than the server \\(${major}\\.`));
    expect(r.out).toMatch(/PG_CLIENT_BIN_DIR/);
    const stored = existsSync(join(store, 'pitr'))
      ? readdirSync(join(store, 'pitr'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile())
      : [];
    expect(stored).toEqual([]);
  }, 120_000);
});
