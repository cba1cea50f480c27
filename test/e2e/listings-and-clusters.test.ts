// Retention and "latest" never act on a partial list, a good backup followed by a failed retention
// is reported as a retention failure, and a backup written by another cluster into the same prefix
// is never taken for this cluster's: not by `restore --latest`, not by the drill, not as this
// cluster's scheduled tick.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob } from '../../src/backup/jobs.js';
import { DbPool } from '../../src/db/pool.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { backupDeps } from '../support/backup.js';
import { craftBackup, writeBackup } from '../support/crafted-backup.js';
import { cliEnv, runCli } from '../support/daemon.js';
import { on, startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startPrivateCluster, useTestDatabase, withDatabase } from '../support/postgres.js';
import { s3CliEnv, startTestS3, type TestS3 } from '../support/s3.js';
import { seed } from '../support/seed.js';
import { tempDir } from '../support/temp.js';
import { eachOutcome, type JobOutcome } from '../../src/schedule/scheduler.js';

const db = useTestDatabase();
const DAY = 86_400_000;
let s3: TestS3;
let proxy: FaultProxy;

beforeAll(async () => {
  await seed(db.pool, 10, 1);
  s3 = await startTestS3();
  proxy = await startFaultProxy({ target: s3.endpoint });
});
afterAll(async () => {
  await proxy?.close();
  await s3?.stop();
});

async function s3Env(extra: Record<string, string> = {}) {
  return s3CliEnv(s3, db.url, await s3.createBucket('pgmaintd-lists'), proxy.url, extra);
}

const TRUNCATED_WITHOUT_TOKEN =
  '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
  '<Name>b</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated></ListBucketResult>';

/** `backups list`, `retention` and `restore --latest` all stop with exit 69 saying why; nothing is deleted. */
async function expectNothingDecided(env: Record<string, string>, why: RegExp[]): Promise<void> {
  for (const args of [
    ['backups', 'list'],
    ['retention'],
    ['restore', '--latest', '--target-url', env.DATABASE_URL!],
  ]) {
    const r = await runCli(args, env);
    expect(r.code, `${args[0]}: ${r.out}`).toBe(EXIT.UNAVAILABLE);
    for (const re of why) expect(r.out).toMatch(re);
    expect(r.out).not.toMatch(/^deleted /m);
  }
}

describe('a listing that cannot be complete', () => {
  it('S3 says "truncated" but gives no continuation token: list, retention and restore --latest refuse, nothing is deleted', async () => {
    const env = await s3Env({ BACKUP_RETENTION_DAYS: '1', BACKUP_RETENTION_MIN_COUNT: '1' });
    expect((await runCli(['backup'], env)).code).toBe(0);
    expect((await runCli(['backup'], env)).code).toBe(0);
    // the store's answer is emulated (s3rver answers correctly): the one part no real store can be made to do
    proxy.status(200, { body: TRUNCATED_WITHOUT_TOKEN, match: on.kind('ListObjectsV2') });
    try {
      await expectNothingDecided(env, [
        /the store said the list was truncated but gave no way to the rest \(no continuation token\), so nothing was decided from it/,
      ]);
    } finally {
      proxy.pass();
    }
    const list = await runCli(['backups', 'list', '--json'], env);
    expect((JSON.parse(list.out) as Array<{ backups: unknown[] }>)[0]!.backups).toHaveLength(2);
  });

  it('a directory entry that cannot be read: list, retention and restore --latest refuse, nothing is deleted', async () => {
    const dir = tempDir('pgmaintd-unreadable-');
    const old = writeBackup(dir, db.name, 'SELECT 1;\n', { at: new Date(Date.now() - 40 * DAY) });
    expect((await runCli(['backup'], cliEnv(db.url, dir, { LOG_LEVEL: 'warn' }))).code).toBe(0);
    const env = cliEnv(db.url, dir, {
      LOG_LEVEL: 'warn',
      BACKUP_RETENTION_DAYS: '1',
      BACKUP_RETENTION_MIN_COUNT: '1',
    });
    // a name that is not UTF-8 cannot be read back as a key
    writeFileSync(Buffer.concat([Buffer.from(join(dir, db.name, 'x')), Buffer.from([0xff, 0xfe])]), '');
    await expectNothingDecided(env, [
      /has a name that is not valid UTF-8 \(78fffe in hex\)/,
      /fix: pg-maintd never writes such names: move that entry out of the backup directory/,
    ]);
    expect(
      readdirSync(join(dir, db.name), { encoding: 'buffer' }).some((n) =>
        n.equals(Buffer.from(old.key.split('/')[1]!)),
      ),
    ).toBe(true);
  });
});

describe('`pg-maintd backup` when retention fails after a good backup', () => {
  it('reports the retention failure as such, with its own exit code, and the backup stays good', async () => {
    const env = await s3Env({ BACKUP_RETENTION_DAYS: '30', BACKUP_RETENTION_MIN_COUNT: '1' });
    // a backup 40 days old gives retention something to delete once the new one is made
    const old = craftBackup(db.name, 'SELECT 1;\n', { at: new Date(Date.now() - 40 * DAY) });
    const client = s3.client();
    await client.send(new PutObjectCommand({ Bucket: env.S3_BUCKET, Key: old.key, Body: old.bytes }));
    await client.send(
      new PutObjectCommand({
        Bucket: env.S3_BUCKET,
        Key: `${old.key}.manifest.json`,
        Body: old.manifestText,
      }),
    );
    proxy.status(500, { match: on.kind('DeleteObjects') });
    let r;
    try {
      r = await runCli(['backup'], env);
    } finally {
      proxy.pass();
    }
    expect(r.code, r.out).toBe(EXIT.RETENTION_FAILED);
    expect(r.out).toMatch(
      new RegExp(`^backup of ${db.name}: s3://\\S+ \\(\\d+ bytes, sha256 [0-9a-f]{64}\\)$`, 'm'),
    );
    expect(r.out).toMatch(
      new RegExp(
        `^pg-maintd: the backup of ${db.name} is good, but retention after it failed: deleting backups failed .*InternalError`,
        'm',
      ),
    );
    expect(r.out).not.toMatch(/backup of \S+ failed/);
    const list = JSON.parse((await runCli(['backups', 'list', '--json'], env)).out) as Array<{
      backups: Array<{ key: string }>;
    }>;
    expect(list[0]!.backups.map((b) => b.key)).toContain(old.key);
    expect(list[0]!.backups).toHaveLength(2);
  });
});

describe('backups of another cluster in the same prefix', () => {
  let other: LocalCluster;
  let dir: string;
  let ours: string;
  let theirs: string;

  beforeAll(async () => {
    other = await startPrivateCluster();
    const admin = new pg.Client({ connectionString: other.url() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${db.name}`);
    await admin.end();
    const theirDb = new pg.Client({ connectionString: other.url(db.name) });
    await theirDb.connect();
    await theirDb.query('CREATE TABLE public.theirs AS SELECT generate_series(1, 5) AS id');
    await theirDb.end();
    dir = tempDir('pgmaintd-clusters-');
    const mine = await runCli(['backup'], cliEnv(db.url, dir, { LOG_LEVEL: 'warn' }));
    ours = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(mine.out)![1]!;
    // the other cluster writes later, into the same folder
    const yours = await runCli(['backup'], cliEnv(other.url(db.name), dir, { LOG_LEVEL: 'warn' }));
    expect(yours.code, yours.out).toBe(0);
    theirs = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(yours.out)![1]!;
  });
  afterAll(async () => {
    await other?.stop();
  });

  it('`restore --latest` and `verify` refuse the newest when another cluster wrote it; --allow-other-cluster takes it', async () => {
    const env = cliEnv(db.url, dir, { LOG_LEVEL: 'warn' });
    const target = withDatabase(env.DATABASE_URL, `${db.name}_restored`);
    const restore = await runCli(['restore', '--latest', '--target-url', target], env);
    expect(restore.code, restore.out).toBe(EXIT.DATAERR);
    expect(restore.out).toMatch(
      new RegExp(
        `the newest backup of "${db.name}" \\(${theirs}\\) comes from another cluster \\(system identifier \\d+\\) than the one DATABASE_URL points at \\(\\d+\\)`,
      ),
    );
    expect(restore.out).toContain(`the newest of this cluster: ${ours}`);
    const verify = await runCli(['verify'], env);
    expect(verify.code, verify.out).toBe(EXIT.DATAERR);
    expect(verify.out).toMatch(/comes from another cluster/);
    const anyway = await runCli(['verify', '--allow-other-cluster'], env);
    expect(anyway.code, anyway.out).toBe(0);
    expect(anyway.out).toContain(`ok: ${theirs}`);
    const list = JSON.parse((await runCli(['backups', 'list', '--json'], env)).out) as Array<{
      backups: Array<{ key: string; systemIdentifier: string }>;
    }>;
    const ids = new Set(list[0]!.backups.map((b) => b.systemIdentifier));
    expect(ids.size).toBe(2);
  });

  it("another cluster's backup of a tick does not make this cluster skip it", async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name, BACKUP_DIR: dir });
    const tick = new Date('2026-12-02T02:00:00.000Z');
    // the other cluster already did this tick
    const yours = JSON.parse(readFileSync(join(dir, `${theirs}.manifest.json`), 'utf8')) as Record<
      string,
      unknown
    >;
    writeBackup(dir, db.name, 'SELECT 1;\n', {
      at: new Date(Date.now() - 1000),
      run: 'feedbeef',
      manifestPatch: { ...pick(yours), tick: tick.toISOString() },
    });
    const lockPool = new DbPool(deps.config.db, { name: 'lock', logger: deps.logger, max: 2 });
    try {
      const before = (await deps.catalog.list(db.name)).good.length;
      const outcomes: JobOutcome[] = [];
      await eachOutcome(backupJob({ ...deps, lockPool }).run(tick, new AbortController().signal), (o) =>
        outcomes.push(o),
      );
      expect(outcomes).toEqual([{ kind: 'ran' }]);
      const after = (await deps.catalog.list(db.name)).good;
      expect(after.length).toBe(before + 1);
      expect(after.filter((g) => g.manifest.tick === tick.toISOString())).toHaveLength(2);
    } finally {
      await lockPool.stop();
    }
  });
});

/** The version 2 fields that name a cluster, to plant a backup "of" it. */
function pick(m: Record<string, unknown>) {
  return {
    manifestVersion: 2,
    systemIdentifier: m.systemIdentifier,
    databaseTime: new Date(Date.now() - 1000).toISOString(),
    warnings: [],
  };
}
