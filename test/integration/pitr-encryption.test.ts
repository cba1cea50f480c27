// Point-in-time recovery with age encryption on a real PostgreSQL 15: WAL archived by the real
// archive_command (`wal-push`, with the recipients only), base backups by the real pg_basebackup
// streamed through age, restores by a real server replaying WAL that `pitr restore`'s own process
// decrypts (the server's OS user cannot read the identity). Encryption is turned on mid-chain, so
// plain and encrypted objects sit side by side.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { CLI, runCli, spawnCli, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir, tempPath } from '../support/temp.js';

const pgUser = (() => {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
})();

let cluster: LocalCluster;
let store: string;
let client: pg.Client;
let sysid: string;
let env: Record<string, string>;
let pushEnv: string;
let idA: string;
let idB: string;
let pubA: string;
/** A time between the rows plain-1/enc-1 and enc-2 (plain base backup, WAL plain then encrypted). */
let mixedTarget: Date;
/** A time between enc-3 and enc-4 (encrypted base backup, encrypted WAL). */
let encTarget: Date;

const q = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) =>
  (await client.query<T>(sql, params)).rows;

async function archiveNow(): Promise<string> {
  const f = (await q<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f'))[0]!.f;
  await waitFor(
    () => q<{ w: string | null; fail: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver'),
    (r) => r[0]!.w !== null && r[0]!.w >= f,
    60_000,
    100,
  );
  return f;
}

/** The database clock, once it is past `after` by a little (no fixed sleep). */
async function clockAfter(after: Date): Promise<Date> {
  const r = await waitFor(
    async () => (await q<{ t: Date }>('SELECT clock_timestamp() AS t'))[0]!.t,
    (t) => t.getTime() > after.getTime() + 300,
    10_000,
    50,
  );
  return r;
}

async function insert(v: string): Promise<Date> {
  return (await q<{ at: Date }>('INSERT INTO rows(v) VALUES ($1) RETURNING at', [v]))[0]!.at;
}

const walDir = () => join(store, 'pitr', sysid, 'wal');
const baseDir = () => join(store, 'pitr', sysid, 'base');

function stopRestored(dir: string) {
  if (!existsSync(join(dir, 'postmaster.pid'))) return;
  spawnSync(join(cluster.binaries.binDir, 'pg_ctl'), ['-D', dir, '-m', 'immediate', '-w', 'stop'], {
    ...pgUser,
    cwd: '/',
    stdio: 'ignore',
  });
}

async function restoredRows(out: string): Promise<string[]> {
  const m = /port=(\d+)/.exec(out);
  if (!m) throw new Error(`no port in the restore's output:\n${out}`);
  const c = new pg.Client({ connectionString: cluster.url().replace(/:\d+\//, `:${m[1]}/`) });
  await c.connect();
  try {
    return (await c.query<{ v: string }>('SELECT v FROM rows ORDER BY at')).rows.map((r) => r.v);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  // the identities live where only root reads: the server's user never needs them
  const keys = tempDir('pitr-enc-keys-');
  chmodSync(keys, 0o700);
  idA = join(keys, 'a.txt');
  idB = join(keys, 'b.txt');
  execFileSync('age-keygen', ['-o', idA], { stdio: 'ignore' });
  execFileSync('age-keygen', ['-o', idB], { stdio: 'ignore' });
  pubA = execFileSync('age-keygen', ['-y', idA], { encoding: 'utf8' }).trim();
  store = tempDir('pitr-enc-store-');
  chownSync(store, pgUser.uid, pgUser.gid);
  // archive_command reads its environment from a file the test rewrites to turn encryption on
  const scripts = tempDir('pitr-enc-push-');
  chmodSync(scripts, 0o755);
  pushEnv = join(scripts, 'env.sh');
  writeFileSync(pushEnv, `export BACKUP_DIR=${store}\n`, { mode: 0o644 });
  const push = join(scripts, 'push.sh');
  writeFileSync(push, `#!/bin/sh\n. ${pushEnv}\nexec ${process.execPath} ${CLI} wal-push "$1"\n`, {
    mode: 0o755,
  });
  cluster = await startPrivateCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'${push} %p'`,
      wal_recycle: 'off',
    },
  });
  client = new pg.Client({ connectionString: cluster.url() });
  await client.connect();
  sysid = (await q<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!.id;
  env = { DATABASE_URL: cluster.url(), BACKUP_DIR: store, DB_SSL_MODE: 'disable' };
  await q('CREATE TABLE rows(v text, at timestamptz DEFAULT clock_timestamp())');
  await archiveNow();
}, 180_000);

afterAll(async () => {
  await client?.end().catch(() => undefined);
});

describe('encrypted point-in-time recovery', () => {
  it('archives plain, then encrypted once the recipients are set; a base backup streams through age', async () => {
    const plainBase = await runCli(['basebackup'], env);
    expect(plainBase.code, plainBase.out).toBe(0);
    await insert('plain-1');
    await archiveNow();
    writeFileSync(pushEnv, `export BACKUP_DIR=${store}\nexport BACKUP_ENCRYPTION_RECIPIENTS=${pubA}\n`);
    const enc1 = await insert('enc-1');
    await archiveNow();
    mixedTarget = await clockAfter(enc1);
    await clockAfter(mixedTarget);
    await insert('enc-2');
    await archiveNow();
    const wal = readdirSync(walDir());
    expect(wal.some((n) => /^[0-9A-F]{24}-[0-9a-f]{64}\.gz$/.test(n))).toBe(true);
    expect(wal.some((n) => /^[0-9A-F]{24}-[0-9a-f]{64}-[0-9a-f]{64}\.gz\.age$/.test(n))).toBe(true);

    // the daemon side has the recipients only
    const r = await runCli(['basebackup'], { ...env, BACKUP_ENCRYPTION_RECIPIENTS: pubA });
    expect(r.code, r.out).toBe(0);
    const data = readdirSync(baseDir()).find((n) => n.endsWith('.tar.gz.age'))!;
    expect(data).toBeDefined();
    const manifest = JSON.parse(readFileSync(join(baseDir(), `${data}.manifest.json`), 'utf8')) as {
      encryption: { format: string; recipients: string[] };
      sha256: string;
      size: number;
    };
    expect(manifest.encryption).toEqual({ format: 'age', recipients: [pubA] });
    const body = readFileSync(join(baseDir(), data));
    expect(manifest.size).toBe(body.length);
    expect(manifest.sha256).toBe(createHash('sha256').update(body).digest('hex'));
    const members = execFileSync(
      'sh',
      ['-c', `age -d -i ${idA} ${join(baseDir(), data)} | gunzip | tar -t`],
      {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
      },
    ).split('\n');
    expect(members).toContain('backup_label');
    expect(members).toContain('backup_manifest');
    const enc3 = await insert('enc-3');
    await archiveNow();
    encTarget = await clockAfter(enc3);
    await clockAfter(encTarget);
    await insert('enc-4');
    await archiveNow();
  }, 240_000);

  it('a stored WAL segment is `age -d -i key | gunzip` of the segment; wal-fetch with a wrong identity exits 255', async () => {
    const file = readdirSync(walDir()).find((n) => n.endsWith('.gz.age'))!;
    const name = file.slice(0, 24);
    const plain = execFileSync('sh', ['-c', `age -d -i ${idA} ${join(walDir(), file)} | gunzip`], {
      maxBuffer: 64 << 20,
    });
    expect(createHash('sha256').update(plain).digest('hex')).toBe(file.slice(25, 89));
    const dest = join(tempDir('pitr-enc-fetch-'), 'RECOVERYXLOG');
    const ok = await runCli(['wal-fetch', name, dest, '--data-dir', cluster.dataDir], {
      BACKUP_DIR: store,
      BACKUP_ENCRYPTION_IDENTITY_FILE: idA,
    });
    expect(ok.code, ok.out).toBe(0);
    expect(readFileSync(dest).equals(plain)).toBe(true);
    const dest2 = join(tempDir('pitr-enc-fetch-'), 'RECOVERYXLOG');
    const bad = await runCli(['wal-fetch', name, dest2, '--data-dir', cluster.dataDir], {
      BACKUP_DIR: store,
      BACKUP_ENCRYPTION_IDENTITY_FILE: idB,
    });
    expect(bad.code, bad.out).toBe(EXIT.RECOVERY_ABORT);
    expect(bad.out).toMatch(/no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/);
    expect(existsSync(dest2)).toBe(false);
  }, 60_000);

  it('pitr list shows what is encrypted, and list and verify need no identity', async () => {
    const r = spawnCli(['pitr', 'list', '--json'], env);
    expect((await r.exited).code, r.output()).toBe(0);
    const s = JSON.parse(r.stdout()) as {
      bases: Array<{ key: string; encryptedTo?: string[] }>;
      wal: Array<{ segments: number; encrypted: number }>;
    };
    expect(s.bases.map((b) => b.encryptedTo ?? null)).toEqual([[pubA], null]);
    expect(s.wal[0]!.encrypted).toBeGreaterThan(0);
    expect(s.wal[0]!.encrypted).toBeLessThan(s.wal[0]!.segments);
    const text = await runCli(['pitr', 'list'], env);
    expect(text.out).toContain(`encrypted (age, to ${pubA})`);
    const v = await runCli(['pitr', 'verify'], env);
    expect(v.code, v.out).toBe(0);
  }, 60_000);

  it('without the identity, or with a wrong one, a restore fails naming the recipients and writes nothing', async () => {
    for (const [target, extra] of [
      [encTarget, {}],
      [encTarget, { BACKUP_ENCRYPTION_IDENTITY_FILE: idB }],
      [mixedTarget, {}],
      [mixedTarget, { BACKUP_ENCRYPTION_IDENTITY_FILE: idB }],
    ] as Array<[Date, Record<string, string>]>) {
      const dir = tempPath('pitr-enc-refused-');
      const r = await runCli(
        ['pitr', 'restore', '--data-dir', dir, '--target-time', target.toISOString(), '--start'],
        { ...env, ...extra },
      );
      expect(r.code, r.out).not.toBe(0);
      expect(r.out).toMatch(
        extra.BACKUP_ENCRYPTION_IDENTITY_FILE
          ? /no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/
          : /BACKUP_ENCRYPTION_IDENTITY_FILE is not set/,
      );
      if (target === encTarget) expect(r.out).toContain(pubA);
      expect(existsSync(dir), r.out).toBe(false);
    }
    // an empty directory given stays empty
    const empty = tempDir('pitr-enc-empty-');
    const r = await runCli(
      ['pitr', 'restore', '--data-dir', empty, '--target-time', encTarget.toISOString()],
      env,
    );
    expect(r.code).not.toBe(0);
    expect(readdirSync(empty)).toEqual([]);
  }, 180_000);

  it('restores to a target time from an encrypted base backup and encrypted WAL, with the identity', async () => {
    const dir = tempPath('pitr-enc-restore-');
    const r = await runCli(
      ['pitr', 'restore', '--data-dir', dir, '--target-time', encTarget.toISOString(), '--start'],
      { ...env, BACKUP_ENCRYPTION_IDENTITY_FILE: idA },
    );
    try {
      expect(r.code, r.out).toBe(0);
      expect(r.out).toMatch(/\.tar\.gz\.age/);
      expect(await restoredRows(r.out)).toEqual(['plain-1', 'enc-1', 'enc-2', 'enc-3']);
    } finally {
      stopRestored(dir);
    }
  }, 240_000);

  it('restores across the rotation: a plain base backup, plain then encrypted WAL', async () => {
    const dir = tempPath('pitr-enc-mixed-');
    const r = await runCli(
      ['pitr', 'restore', '--data-dir', dir, '--target-time', mixedTarget.toISOString(), '--start'],
      { ...env, BACKUP_ENCRYPTION_IDENTITY_FILE: idA },
    );
    try {
      expect(r.code, r.out).toBe(0);
      expect(await restoredRows(r.out)).toEqual(['plain-1', 'enc-1']);
    } finally {
      stopRestored(dir);
    }
  }, 240_000);

  it("a drill of an encrypted base backup without the identity is this host's problem: said, never recorded as a failed drill", async () => {
    const data = readdirSync(baseDir()).find((n) => n.endsWith('.tar.gz.age'))!;
    const stop = new Date(
      (
        JSON.parse(readFileSync(join(baseDir(), `${data}.manifest.json`), 'utf8')) as {
          stopDatabaseTime: string;
        }
      ).stopDatabaseTime,
    );
    // WAL stored well past the base backup's end, so the drill has a target to restore to
    await clockAfter(new Date(stop.getTime() + 6000));
    await insert('enc-5');
    await archiveNow();
    const drillEnv = { ...env, PITR_HEARTBEAT_INTERVAL: '1s', WAL_PARTIAL_UPLOAD_INTERVAL: '1s' };
    const drills = join(store, 'pitr', sysid, 'drills');
    for (const [extra, said] of [
      [{}, /BACKUP_ENCRYPTION_IDENTITY_FILE is not set/],
      [{ BACKUP_ENCRYPTION_IDENTITY_FILE: idB }, /no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/],
    ] as Array<[Record<string, string>, RegExp]>) {
      const r = await runCli(['pitr', 'drill'], { ...drillEnv, ...extra });
      expect(r.code, r.out).not.toBe(0);
      expect(r.out).toMatch(said);
      expect(r.out).toContain(pubA);
      expect(r.out).not.toMatch(/PITR drill failed/);
      expect(existsSync(drills) ? readdirSync(drills) : [], r.out).toEqual([]);
    }
  }, 240_000);
});
