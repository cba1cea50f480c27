// What must not happen when a backup breaks: a partial backup that looks good, a lost good one,
// a password in argv. Each fault is real: a SIGKILLed pg_dump, a stopped server, an old pg_dump.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { BackupError } from '../../src/backup/dump.js';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { backupDeps, metricValue, type TestDeps } from '../support/backup.js';
import { waitFor } from '../support/daemon.js';
import { startPrivateCluster, useTestDatabase } from '../support/postgres.js';
import { pgDumpPids } from '../support/crafted-backup.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();

/** ~45 MB of poorly compressible rows: enough for a dump that is still running when we strike. */
async function bulk(pool: pg.Pool) {
  await pool.query(`CREATE TABLE blobs AS
    SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(g::text) AS a, md5(random()::text) AS b
      FROM generate_series(1, 400000) g`);
}

beforeAll(async () => {
  await bulk(db.pool);
});

function files(dir: string): string[] {
  return existsSync(dir)
    ? readdirSync(dir, { recursive: true })
        .map(String)
        .filter((f) => statSync(join(dir, f)).isFile())
    : [];
}

/** Nothing good-looking left: no data object, no manifest, no temp file. */
function expectNothingStored(deps: TestDeps) {
  expect(files(deps.dir)).toEqual([]);
}

async function failure(p: Promise<unknown>): Promise<BackupError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackupError);
  return err as BackupError;
}

/** pg_dump processes dumping `database` (other test files may run their own pg_dump meanwhile). */
/** Waits until no pg_dump of `database` is running: a failed backup leaves no orphan. */
async function noPgDumpLeft(database: string): Promise<void> {
  await waitFor(
    async () => pgDumpPids({ PGDATABASE: database }).length,
    (n) => n === 0,
    5000,
    50,
  );
}

/** Waits until a backup's temporary file exists: the dump is streaming. */
async function untilWriting(dir: string): Promise<void> {
  await waitFor(
    async () => files(dir).some((f) => f.includes('.partial-')),
    (x) => x,
    20_000,
    10,
  );
}

/** Slow enough to strike mid-stream: level 9 on one thread. */
const slow = { BACKUP_COMPRESSION_LEVEL: '9', BACKUP_COMPRESSION_THREADS: '1' };

describe('backup faults', () => {
  it('pg_dump SIGKILLed mid-stream: no backup kept, reason pg_dump, and the password was never in its argv', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, ...slow });
    const password = new URL(db.url).password;
    expect(password.length).toBeGreaterThan(8);
    const running = runBackup(deps, db.name);
    const failed = failure(running);
    // wait until compressed bytes are landing in the temp file: mid-stream
    await waitFor(
      async () =>
        files(deps.dir).find((f) => f.includes('.partial-') && statSync(join(deps.dir, f)).size > 0),
      (f) => f !== undefined,
      20_000,
      10,
    );
    const [pid] = pgDumpPids({ PGDATABASE: db.name });
    expect(pid).toBeDefined();
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline[0]).toMatch(/pg_dump$/);
    expect(cmdline.join(' ')).not.toContain(password);
    expect(cmdline.join(' ')).toMatch(/--snapshot=/); // the manifest's counts come from this snapshot
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    expect(environ).toContain(`PGPASSWORD=${password}`); // the password travels here, readable only by us
    process.kill(pid!, 'SIGKILL');

    const err = await failed;
    expect(err.reason).toBe('pg_dump');
    expect(err.message).toMatch(/pg_dump was killed by SIGKILL/);
    expectNothingStored(deps);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_failures_total', {
        database: db.name,
        reason: 'pg_dump',
      }),
    ).toBe(1);
    expect(await metricValue(deps.registry, 'pgmaintd_backup_in_progress', {})).toBe(0);

    const next = await runBackup(deps, db.name); // the next run works
    expect(files(deps.dir).sort()).toEqual([next.key, `${next.key}.manifest.json`]);
  });

  it('a backup that outlives BACKUP_TIMEOUT is aborted with reason timeout, nothing kept', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, BACKUP_TIMEOUT: '1s' });
    const holder = await db.pool.connect();
    try {
      await holder.query('BEGIN; LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE'); // pg_dump waits for it
      const err = await failure(runBackup(deps, db.name));
      expect(err.reason).toBe('timeout');
      expect(err.hint).toMatch(/BACKUP_TIMEOUT/);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expectNothingStored(deps);
    await noPgDumpLeft(db.name);
  });

  it('an external abort (shutdown) mid-stream: reason aborted, nothing kept, pg_dump gone', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, ...slow });
    const abort = new AbortController();
    const failed = failure(runBackup(deps, db.name, { signal: abort.signal }));
    await untilWriting(deps.dir);
    abort.abort(new Error('shutting down'));
    const err = await failed;
    expect(err.reason).toBe('aborted');
    expectNothingStored(deps);
    await noPgDumpLeft(db.name);
  });

  it('pg_dump missing: a clear error before anything is written', async () => {
    const empty = tempDir('no-client-'); // an empty folder, as PG_CLIENT_BIN_DIR
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      PG_CLIENT_BIN_DIR: empty,
    });
    const err = await failure(runBackup(deps, db.name));
    expect(err.reason).toBe('pg_dump');
    expect(err.message).toBe(`pg_dump not found (looked for ${empty}/pg_dump)`);
    expect(err.hint).toMatch(/postgresql-client-18.*PG_CLIENT_BIN_DIR/);
    expectNothingStored(deps);
  });

  it('a backup directory that cannot be created: reason storage, says what to fix', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_DIR: '/proc/version/backups',
    });
    const err = await failure(runBackup(deps, db.name));
    expect(err.reason).toBe('storage');
    expect(err.message).toMatch(/backup directory \/proc\/version\/backups is not writable/);
    expect(err.hint).toMatch(/BACKUP_DIR/);
  });
});

describe('backup faults on a private server', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster();
    const pool = new pg.Pool({ connectionString: cluster.url() });
    await bulk(pool);
    await pool.end();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('PostgreSQL stopped mid-dump: nothing kept; after a restart the next run works', async () => {
    const deps = await backupDeps({ DATABASE_URL: cluster.url(), ...slow });
    const failed = failure(runBackup(deps, 'postgres'));
    await untilWriting(deps.dir);
    await cluster.stopServer();
    const err = await failed;
    expect(err.reason).toBe('database'); // the server went away: not pg_dump's fault
    expectNothingStored(deps);
    await cluster.startServer();
    const next = await runBackup(deps, 'postgres');
    expect(files(deps.dir).sort()).toEqual([next.key, `${next.key}.manifest.json`]);
  });
});

describe('pg_dump older than the server', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startPrivateCluster({ binaries: findServerBinaries(17) });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('fails before any data moves, naming both versions and the fix', async () => {
    const deps = await backupDeps({ DATABASE_URL: cluster.url() });
    const err = await failure(runBackup(deps, 'postgres'));
    expect(err.reason).toBe('version_mismatch');
    expect(err.message).toMatch(
      /^pg_dump 15 \(15\.\d+.*\) is older than the server, PostgreSQL 17 \(17\.\d+/,
    );
    expect(err.hint).toMatch(/install postgresql-client-17 or newer \(the Docker image ships 18\)/);
    expectNothingStored(deps);
    expect(
      pgDumpPids({ PGDATABASE: 'postgres' }).filter((pid) =>
        readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`PGPORT=${cluster.port}`),
      ),
    ).toEqual([]);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_failures_total', {
        database: 'postgres',
        reason: 'version_mismatch',
      }),
    ).toBe(1);
  });
});
