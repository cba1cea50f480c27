// Backups end to end against a real PostgreSQL, real pg_dump/psql/pg_restore, a local directory
// and a real S3 API: round trips, manifests, tampering, and the safety properties.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { parseManifest } from '../../src/backup/manifest.js';
import { restoreBackup } from '../../src/backup/restore.js';
import { runVerification } from '../../src/backup/verify.js';
import { createLogger } from '../../src/log/logger.js';
import { backupDeps, metricValue, type TestDeps } from '../support/backup.js';
import { adminUrl, useTestDatabase, withDatabase } from '../support/postgres.js';
import { seed, tableCounts, tableDigest } from '../support/seed.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

const db = useTestDatabase();
let seeded: { users: number; projects: number; tasks: number };

beforeAll(async () => {
  seeded = await seed(db.pool, 300, 4);
});

/** A new empty database on the harness server; dropped after the file. */
const scratch: string[] = [];
async function emptyDatabase(): Promise<{ name: string; url: string; pool: pg.Pool }> {
  const name = `${db.name}_r${scratch.length}`;
  await db.pool.query(`CREATE DATABASE ${name}`);
  scratch.push(name);
  const url = withDatabase(adminUrl(), name);
  return { name, url, pool: new pg.Pool({ connectionString: url, max: 2 }) };
}
/** Runs `fn` against a new empty database, closing its pool afterwards. */
async function withEmptyDatabase(
  fn: (target: { name: string; url: string; pool: pg.Pool }) => Promise<void>,
): Promise<void> {
  const target = await emptyDatabase();
  try {
    await fn(target);
  } finally {
    await target.pool.end();
  }
}

/** Restore options for a backup (by key or the latest of a database) into a target. */
function restoreOpts(deps: TestDeps, target: { url: string }, pick: { key?: string; database?: string }) {
  return { ...deps, ssl: deps.config.db.ssl, clientBinDir: undefined, targetUrl: target.url, ...pick };
}

afterAll(async () => {
  for (const name of scratch) await db.pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
});

function walk(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String) : [];
}

describe('backup to a local directory', () => {
  it('streams a plain dump into <db>/<db>_<YYYYMMDD_HHMMSS>-<run>.sql.gz with a manifest, and restores the same rows', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);

    expect(manifest.key).toMatch(new RegExp(`^${db.name}/${db.name}_\\d{8}_\\d{6}-[0-9a-f]{8}\\.sql\\.gz$`));
    const file = join(deps.dir, manifest.key);
    const bytes = readFileSync(file);
    expect(manifest.size).toBe(bytes.length);
    expect(manifest.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    execFileSync('gzip', ['-t', file]); // one valid .gz, members and all
    expect(manifest).toMatchObject({
      format: 'plain',
      database: db.name,
      compression: { algorithm: 'gzip', level: 6 },
      rowCounts: {
        'public.users': { rows: seeded.users, exact: true },
        'public.projects': { rows: seeded.projects, exact: true },
        'public.tasks': { rows: seeded.tasks, exact: true },
      },
    });
    expect(manifest.pgDumpVersion).toMatch(/^\d+\.\d+/);
    expect(manifest.serverVersionNum).toBeGreaterThanOrEqual(130000);
    expect(Date.parse(manifest.finishedAt)).toBeGreaterThanOrEqual(Date.parse(manifest.startedAt));
    const stored = parseManifest(readFileSync(`${file}.manifest.json`), 'm');
    expect(stored).toEqual(manifest);
    expect(walk(deps.dir).filter((f) => f.includes('.partial-'))).toEqual([]);
    // --clean --if-exists; owners kept (BACKUP_OWNERSHIP=keep, the default)
    const sql = execFileSync('gzip', ['-dc', file], { maxBuffer: 256 * 1024 * 1024 }).toString();
    expect(sql).toMatch(/DROP TABLE IF EXISTS public\.tasks;/);
    expect(sql).toMatch(/ALTER TABLE public\.tasks OWNER TO /);
    expect(manifest.ownership).toBe('keep');

    await withEmptyDatabase(async (target) => {
      await restoreBackup(restoreOpts(deps, target, { key: manifest.key }));
      expect(await tableCounts(target.pool)).toEqual({
        users: seeded.users,
        projects: seeded.projects,
        tasks: seeded.tasks,
      });
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_runs_total', {
        database: db.name,
        result: 'success',
      }),
    ).toBe(1);
    expect(await metricValue(deps.registry, 'pgmaintd_backup_stored', { database: db.name })).toBe(1);
    expect(await metricValue(deps.registry, 'pgmaintd_backup_last_size_bytes', { database: db.name })).toBe(
      manifest.size,
    );
  });

  it('BACKUP_OWNERSHIP=omit dumps with --no-owner --no-privileges, and says so in the manifest', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_OWNERSHIP: 'omit',
    });
    const manifest = await runBackup(deps, db.name);
    expect(manifest.ownership).toBe('omit');
    const sql = execFileSync('gzip', ['-dc', join(deps.dir, manifest.key)], {
      maxBuffer: 256 * 1024 * 1024,
    }).toString();
    expect(sql).toMatch(/CREATE TABLE public\.tasks/);
    expect(sql).not.toMatch(/OWNER TO|GRANT /);
  });

  it('BACKUP_FORMAT=custom dumps with -Fc and restores with pg_restore', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_FORMAT: 'custom',
    });
    const manifest = await runBackup(deps, db.name);
    expect(manifest.key).toMatch(/\.dump\.gz$/);
    const archive = execFileSync('gzip', ['-dc', join(deps.dir, manifest.key)], {
      maxBuffer: 256 * 1024 * 1024,
    });
    expect(archive.subarray(0, 5).toString()).toBe('PGDMP');
    await withEmptyDatabase(async (target) => {
      await restoreBackup(restoreOpts(deps, target, { database: db.name }));
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
  });

  it('refuses a non-empty target unless --clean, which replaces what the backup holds', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    await withEmptyDatabase(async (target) => {
      await target.pool.query('CREATE TABLE users (id int); INSERT INTO users VALUES (1)');
      const opts = restoreOpts(deps, target, { key: manifest.key });
      await expect(restoreBackup(opts)).rejects.toThrow(/is not empty \(1 tables/);
      expect(await target.pool.query('SELECT * FROM users')).toMatchObject({ rowCount: 1 });
      await restoreBackup({ ...opts, clean: true });
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
  });

  it('refuses a tampered object (one byte flipped) and leaves the target untouched', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    const file = join(deps.dir, manifest.key);
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(file, bytes);
    await withEmptyDatabase(async (target) => {
      const err = await restoreBackup(restoreOpts(deps, target, { key: manifest.key })).catch(
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(/checksum mismatch|invalid|incorrect|corrupt/i);
      const tables = await target.pool.query("SELECT 1 FROM pg_tables WHERE schemaname = 'public'");
      expect(tables.rowCount).toBe(0); // one transaction, rolled back
    });
  });

  it('a checksum mismatch (data intact, manifest disagrees) is refused before the transaction commits', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    const mpath = join(deps.dir, `${manifest.key}.manifest.json`);
    writeFileSync(mpath, JSON.stringify({ ...manifest, sha256: 'f'.repeat(64) }));
    const target = await emptyDatabase();
    const fresh = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, BACKUP_DIR: deps.dir }); // manifests are cached
    try {
      const err = await restoreBackup(restoreOpts(fresh, target, { key: manifest.key })).catch(
        (e: Error) => e,
      );
      expect((err as Error).message).toMatch(/checksum mismatch for .*manifest says f{64}/);
      expect((await target.pool.query("SELECT 1 FROM pg_tables WHERE schemaname = 'public'")).rowCount).toBe(
        0,
      );
    } finally {
      await target.pool.end();
    }
  });

  it('never restores or lists an object without a manifest', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    execFileSync('rm', [join(deps.dir, `${manifest.key}.manifest.json`)]);
    const listing = await deps.catalog.list(db.name);
    expect(listing.good).toEqual([]);
    expect(listing.incomplete.map((l) => l.key)).toEqual([manifest.key]);
    expect(await deps.catalog.latest(db.name)).toBeUndefined();
    await expect(
      restoreBackup({
        ...deps,
        ssl: deps.config.db.ssl,
        clientBinDir: undefined,
        key: manifest.key,
        targetUrl: db.url,
      }),
    ).rejects.toThrow(/no manifest: the backup did not complete/);
  });

  it('the restore drill restores into a scratch database, compares row counts, records the result, drops the scratch', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    const rec = await runVerification(deps, db.name);
    expect(rec).toMatchObject({ key: manifest.key, ok: true, tablesCompared: 3, mismatches: [] });
    const records = () =>
      readdirSync(join(deps.dir, manifest.key.split('/')[0]!))
        .filter((f) => f.startsWith(`${manifest.key.split('/')[1]!}.verify-`))
        .sort();
    expect(records()).toHaveLength(1);
    const stored = JSON.parse(
      readFileSync(join(deps.dir, manifest.key.split('/')[0]!, records()[0]!), 'utf8'),
    ) as { ok: boolean };
    expect(stored.ok).toBe(true);
    // a second drill writes a second record (nothing is rewritten); the newest counts
    const again = await runVerification(deps, db.name);
    expect(records()).toHaveLength(2);
    expect((await deps.catalog.latest(db.name))!.verify!.verifiedAt).toBe(again.verifiedAt);
    expect((await deps.catalog.latest(db.name))!.verify!.ok).toBe(true);
    expect(
      await metricValue(deps.registry, 'pgmaintd_backup_verify_last_success_timestamp_seconds', {
        database: db.name,
      }),
    ).toBeGreaterThan(Date.now() / 1000 - 60);
    const left = await db.pool.query(
      "SELECT datname FROM pg_database WHERE datname LIKE 'pgmaintd_verify_%'",
    );
    expect(left.rows).toEqual([]);
  });

  it('a drill whose counts disagree with the manifest fails and says which table', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    const mpath = join(deps.dir, `${manifest.key}.manifest.json`);
    const bad = {
      ...manifest,
      rowCounts: { ...manifest.rowCounts, 'public.users': { rows: 1, exact: true } },
    };
    writeFileSync(mpath, JSON.stringify(bad));
    const rec = await runVerification(
      await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, BACKUP_DIR: deps.dir }),
      db.name,
    );
    expect(rec.ok).toBe(false);
    expect(rec.mismatches).toEqual([{ table: 'public.users', expected: 1, actual: seeded.users }]);
  });
});

describe('backup to S3', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startTestS3();
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('uploads with a streaming multipart upload under the prefix, with a manifest, and restores the same rows', async () => {
    const bucket = await s3.createBucket();
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      S3_BUCKET: bucket,
      S3_PREFIX: 'prod/',
      S3_ENDPOINT: s3.endpoint,
      S3_FORCE_PATH_STYLE: 'true',
      S3_REGION: s3.region,
    });
    const manifest = await runBackup(deps, db.name);
    const { ListObjectsV2Command, GetObjectCommand } = await import('@aws-sdk/client-s3');
    const listed = await s3.client().send(new ListObjectsV2Command({ Bucket: bucket }));
    expect(listed.Contents!.map((o) => o.Key).sort()).toEqual([
      `prod/${manifest.key}`,
      `prod/${manifest.key}.manifest.json`,
    ]);
    const obj = await s3.client().send(new GetObjectCommand({ Bucket: bucket, Key: `prod/${manifest.key}` }));
    const bytes = Buffer.from(await obj.Body!.transformToByteArray());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(manifest.sha256);
    expect(deps.storage.description).toBe(`s3://${bucket}/prod/`);

    await withEmptyDatabase(async (target) => {
      await restoreBackup(restoreOpts(deps, target, { database: db.name }));
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
    const rec = await runVerification(deps, db.name);
    expect(rec.ok).toBe(true);
  });
});

describe('progress', () => {
  /** A logger that keeps its lines, parsed. */
  function capture() {
    const lines: Array<Record<string, unknown> & { msg: string }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean))
          lines.push(JSON.parse(l) as (typeof lines)[number]);
        done();
      },
    });
    return { lines, logger: createLogger({ level: 'info', format: 'json', destination }) };
  }

  it('a backup and a restore log progress events with a percentage below 100 (the dump: about the database size)', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const { lines, logger } = capture();
    const manifest = await runBackup({ ...deps, logger }, db.name, { progressEveryMs: 1 });
    const dumped = lines.filter((l) => l.msg === 'backup progress');
    expect(dumped.length, JSON.stringify(lines)).toBeGreaterThan(0);
    const size = Number(
      (await db.pool.query<{ n: string }>('SELECT pg_database_size(current_database()) AS n')).rows[0]!.n,
    );
    for (const p of dumped) {
      expect(p).toMatchObject({ databaseBytes: size, estimate: true });
      expect(p.percent).toBeGreaterThanOrEqual(0);
      expect(p.percent).toBeLessThanOrEqual(99);
      expect(p.percent).toBe(Math.min(99, Math.floor(((p.dumpedBytes as number) / size) * 1000) / 10));
      if (p.etaSeconds !== undefined) expect(p.etaSeconds).toBeGreaterThan(0);
    }
    await withEmptyDatabase(async (target) => {
      await restoreBackup({
        ...restoreOpts(deps, target, { key: manifest.key }),
        logger,
        progressEveryMs: 1,
      });
    });
    const restored = lines.filter((l) => l.msg === 'restore progress');
    expect(restored.length, JSON.stringify(lines)).toBeGreaterThan(0);
    for (const p of restored) {
      expect(p.totalBytes).toBe(manifest.size);
      expect(p.percent).toBe(Math.min(99, Math.floor(((p.readBytes as number) / manifest.size) * 1000) / 10));
      expect(p.estimate).toBeUndefined();
    }
  });
});

describe('restore edge cases', () => {
  it('restores the whole script: indexes, constraints and triggers arrive as well as rows', async () => {
    await db.pool.query(`CREATE INDEX IF NOT EXISTS tasks_title_idx ON tasks (title);
      CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;
      DROP TRIGGER IF EXISTS tasks_touch ON tasks; CREATE TRIGGER tasks_touch BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION touch();`);
    const shape = async (pool: pg.Pool) =>
      (
        await pool.query<{ n: string; c: string; t: string }>(`SELECT
          (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public') AS n,
          (SELECT count(*) FROM pg_constraint c JOIN pg_namespace s ON s.oid = c.connamespace WHERE s.nspname = 'public') AS c,
          (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal) AS t`)
      ).rows[0];
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    await withEmptyDatabase(async (target) => {
      await restoreBackup(restoreOpts(deps, target, { key: manifest.key }));
      expect(await shape(target.pool)).toEqual(await shape(db.pool));
      expect((await shape(target.pool))!.t).toBe('1');
    });
  });

  it('a client that stops early (an SQL error under ON_ERROR_STOP) fails the restore at once, without hanging', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    await withEmptyDatabase(async (target) => {
      // a view on users makes the dump's DROP TABLE users fail: psql stops at the first statement error
      await target.pool.query('CREATE TABLE users (id int); CREATE VIEW keep_me AS SELECT * FROM users');
      const t0 = Date.now();
      const err = await restoreBackup({
        ...restoreOpts(deps, target, { key: manifest.key }),
        clean: true,
      }).catch((e: Error) => e);
      expect((err as Error).message).toMatch(
        /psql (exited with code 3|exited before the whole backup was sent)/,
      );
      expect(Date.now() - t0).toBeLessThan(20_000);
      // rolled back: the view and the old table are still there, nothing of the backup is
      expect((await target.pool.query('SELECT count(*)::int AS n FROM keep_me')).rows[0]).toEqual({ n: 0 });
      expect((await target.pool.query("SELECT to_regclass('public.tasks') AS t")).rows[0]).toEqual({
        t: null,
      });
    });
  });

  it('an unreadable drill record does not break the listing of a good backup', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const manifest = await runBackup(deps, db.name);
    writeFileSync(join(deps.dir, `${manifest.key}.verify.json`), '{ not json');
    const fresh = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, BACKUP_DIR: deps.dir });
    const latest = await fresh.catalog.latest(db.name);
    expect(latest?.key).toBe(manifest.key);
    expect(latest?.verify).toBeUndefined();
  });
});
