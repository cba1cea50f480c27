// Encrypted dumps end to end against a real PostgreSQL, the real `age` CLI, a local directory and a
// real S3 API: what pg-maintd stores is read by `age -d | gunzip | psql` by hand; restore and drills
// decrypt with BACKUP_ENCRYPTION_IDENTITY_FILE; a missing or wrong identity is a clear error that
// leaves the target untouched; plain and encrypted backups sit side by side; a recipients file that
// breaks mid-life stops the backup rather than storing plaintext.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { BackupError } from '../../src/backup/dump.js';
import { AGE_MAGIC } from '../../src/backup/encryption.js';
import { parseManifest } from '../../src/backup/manifest.js';
import { restoreBackup } from '../../src/backup/restore.js';
import { runVerification } from '../../src/backup/verify.js';
import { OperatorError } from '../../src/core/errors.js';
import { backupDeps, drillRecords, type TestDeps } from '../support/backup.js';
import { runCli, cliEnv } from '../support/daemon.js';
import { adminUrl, useTestDatabase, withDatabase } from '../support/postgres.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { seed, tableCounts, tableDigest } from '../support/seed.js';
import { ageKeyPair } from '../support/age-keys.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase('enc');
const keys = tempDir('pgmaintd-age-keys-');
let seeded: { users: number; projects: number; tasks: number };

const keyPair = (name: string) => ageKeyPair(keys, name);
const alice = keyPair('alice.txt');
const bob = keyPair('bob.txt');

beforeAll(async () => {
  seeded = await seed(db.pool, 200, 3);
});

const scratch: string[] = [];
async function withEmptyDatabase(fn: (t: { name: string; url: string; pool: pg.Pool }) => Promise<void>) {
  const name = `${db.name}_e${scratch.length}`;
  await db.pool.query(`CREATE DATABASE ${name}`);
  scratch.push(name);
  const url = withDatabase(adminUrl(), name);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  try {
    await fn({ name, url, pool });
  } finally {
    await pool.end();
  }
}
afterAll(async () => {
  for (const name of scratch) await db.pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
});

function restoreOpts(deps: TestDeps, url: string, key: string, identityFile?: string) {
  return {
    ...deps,
    ssl: deps.config.db.ssl,
    clientBinDir: undefined,
    targetUrl: url,
    key,
    identityFile,
  };
}

/** The CLI refuses a password in --target-url: it comes in PGPASSWORD (cliEnv). */
function noPassword(url: string): string {
  const u = new URL(url);
  u.password = '';
  return u.toString();
}

/** Relations in the target that a restore would have made. */
async function relations(pool: pg.Pool): Promise<number> {
  const r = await pool.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
  );
  return Number(r.rows[0]!.n);
}

/** The standard tools by hand: age -d | gunzip | psql. */
function restoreByHand(file: string, identity: string, url: string): void {
  execFileSync(
    'sh',
    [
      '-c',
      'set -e; age -d -i "$ID" "$FILE" | gunzip | psql -X -q -v ON_ERROR_STOP=1 --single-transaction "$URL" >/dev/null',
    ],
    { env: { ...process.env, ID: identity, FILE: file, URL: url }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
}

describe('encrypted dumps in a local directory', () => {
  it('stores <key>.sql.gz.age that `age -d | gunzip | psql` restores, with the manifest naming the recipients', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_ENCRYPTION_RECIPIENTS: `${alice.recipient},${bob.recipient}`,
    });
    const manifest = await runBackup(deps, db.name);
    expect(manifest.key).toMatch(
      new RegExp(`^${db.name}/${db.name}_\\d{8}_\\d{6}-[0-9a-f]{8}\\.sql\\.gz\\.age$`),
    );
    expect(manifest.encryption).toEqual({ format: 'age', recipients: [alice.recipient, bob.recipient] });
    const file = join(deps.dir, manifest.key);
    const bytes = readFileSync(file);
    // size and checksum are of the stored (encrypted) bytes: checks need no identity
    expect(bytes.subarray(0, AGE_MAGIC.length).toString()).toBe(AGE_MAGIC);
    expect(manifest.size).toBe(bytes.length);
    expect(manifest.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const stored = parseManifest(readFileSync(`${file}.manifest.json`), 'm');
    expect(stored).toMatchObject({ encryption: { format: 'age' } });
    // no plaintext anywhere in the store
    for (const f of readdirSync(join(deps.dir, db.name))) expect(f).not.toMatch(/\.gz$/);

    for (const who of [alice, bob])
      await withEmptyDatabase(async (target) => {
        restoreByHand(file, who.file, target.url);
        expect(await tableCounts(target.pool)).toEqual(seeded);
      });

    // pg-maintd's own restore, with either identity
    await withEmptyDatabase(async (target) => {
      const r = await restoreBackup(restoreOpts(deps, target.url, manifest.key, bob.file));
      expect(r.bytes).toBe(bytes.length);
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
  });

  it('without an identity, or with the wrong one, says to whom it is encrypted and writes nothing to the target', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    });
    const manifest = await runBackup(deps, db.name);
    const garbage = join(keys, 'not-an-identity.txt');
    writeFileSync(garbage, '# nothing here\n');
    await withEmptyDatabase(async (target) => {
      for (const [identity, said] of [
        [undefined, /BACKUP_ENCRYPTION_IDENTITY_FILE is not set/],
        [bob.file, /no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/],
        [garbage, /holds no age identity/],
        [join(keys, 'missing.txt'), /cannot read BACKUP_ENCRYPTION_IDENTITY_FILE/],
      ] as const) {
        const err = await restoreBackup(restoreOpts(deps, target.url, manifest.key, identity)).catch(
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(OperatorError);
        const e = err as OperatorError;
        expect(e.message).toMatch(said);
        expect(e.message).toContain(alice.recipient);
        expect(e.message).toMatch(/nothing was restored/);
        expect(e.hint).toBeTruthy();
        // the identity itself never appears in a message
        expect(e.message).not.toMatch(/AGE-SECRET-KEY-1[0-9A-Z]{20}/);
        expect(await relations(target.pool)).toBe(0);
      }
    });
  });

  it('a manifest that lies about the recipients is caught by the header, before the client runs', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    });
    const manifest = await runBackup(deps, db.name);
    const mfile = join(deps.dir, `${manifest.key}.manifest.json`);
    const forged = { ...manifest, encryption: { format: 'age', recipients: [bob.recipient] } };
    writeFileSync(mfile, JSON.stringify(forged));
    await withEmptyDatabase(async (target) => {
      await expect(restoreBackup(restoreOpts(deps, target.url, manifest.key, bob.file))).rejects.toThrow(
        /no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/,
      );
      expect(await relations(target.pool)).toBe(0);
    });
  });

  it('custom format: .dump.gz.age restores with pg_restore, and the drill passes', async () => {
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_FORMAT: 'custom',
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
      BACKUP_ENCRYPTION_IDENTITY_FILE: alice.file,
    });
    const manifest = await runBackup(deps, db.name);
    expect(manifest.key).toMatch(/\.dump\.gz\.age$/);
    const archive = execFileSync('sh', ['-c', 'age -d -i "$ID" "$FILE" | gunzip'], {
      env: { ...process.env, ID: alice.file, FILE: join(deps.dir, manifest.key) },
      maxBuffer: 256 * 1024 ** 2,
    });
    expect(archive.subarray(0, 5).toString()).toBe('PGDMP');
    await withEmptyDatabase(async (target) => {
      await restoreBackup(restoreOpts(deps, target.url, manifest.key, alice.file));
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
    const record = await runVerification(deps, db.name, { key: manifest.key });
    expect(record).toMatchObject({ ok: true, result: 'ok' });
    expect(record.tablesCompared).toBeGreaterThan(0);
  });

  it('the drill of an encrypted plain dump passes; without the identity it is refused, not recorded as failed', async () => {
    const env = {
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    };
    const deps = await backupDeps({ ...env, BACKUP_ENCRYPTION_IDENTITY_FILE: alice.file });
    const manifest = await runBackup(deps, db.name);
    expect(await runVerification(deps, db.name, { key: manifest.key })).toMatchObject({ ok: true });
    const noIdentity = {
      ...deps,
      config: {
        ...deps.config,
        backup: {
          ...deps.config.backup,
          encryption: { ...deps.config.backup.encryption, identityFile: undefined },
        },
      },
    };
    // one record per drill: the refused drill adds none
    const before = drillRecords(deps.dir, manifest.key);
    expect(before).toHaveLength(1);
    await expect(runVerification(noIdentity, db.name, { key: manifest.key })).rejects.toThrow(
      /BACKUP_ENCRYPTION_IDENTITY_FILE is not set/,
    );
    expect(drillRecords(deps.dir, manifest.key)).toEqual(before);
  });

  it('plain and encrypted backups side by side: listed apart, each restored its own way', async () => {
    const plainDeps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const dir = plainDeps.dir;
    const plain = await runBackup(plainDeps, db.name);
    // the key rotation: the same store, now encrypted
    const encDeps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_DIR: dir,
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    });
    const encrypted = await runBackup(encDeps, db.name);
    const listing = await encDeps.catalog.list(db.name);
    expect(listing.incomplete).toEqual([]);
    expect(
      listing.good.map((g) => [g.key, 'encryption' in g.manifest ? g.manifest.encryption : undefined]),
    ).toEqual([
      [encrypted.key, { format: 'age', recipients: [alice.recipient] }],
      [plain.key, undefined],
    ]);

    // the CLI's listing says which is which
    const env = cliEnv(db.url, dir, { BACKUP_DATABASES: db.name, LOG_LEVEL: 'warn' });
    const json = await runCli(['backups', 'list', '--json'], env);
    expect(json.code).toBe(0);
    const listed = (JSON.parse(json.out) as { backups: { key: string; encryption: unknown }[] }[])[0]!
      .backups;
    expect(listed.map((b) => [b.key, b.encryption])).toEqual([
      [encrypted.key, { format: 'age', recipients: [alice.recipient] }],
      [plain.key, null],
    ]);
    const table = await runCli(['backups', 'list'], env);
    expect(table.out).toMatch(/ENCRYPTION/);
    expect(table.out.split('\n').find((l) => l.startsWith(encrypted.key))).toMatch(/ age: age1/);
    expect(table.out.split('\n').find((l) => l.startsWith(plain.key))).toMatch(/ none /);

    // the plain one needs no identity; the encrypted one does, by the CLI too
    await withEmptyDatabase(async (target) => {
      const r = await runCli(['restore', '--key', plain.key, '--target-url', noPassword(target.url)], env);
      expect(r.code, r.out).toBe(0);
      expect(await tableCounts(target.pool)).toEqual(seeded);
    });
    await withEmptyDatabase(async (target) => {
      const url = noPassword(target.url);
      const refused = await runCli(['restore', '--key', encrypted.key, '--target-url', url], env);
      expect(refused.code).not.toBe(0);
      expect(refused.out).toContain(alice.recipient);
      expect(refused.out).toMatch(/BACKUP_ENCRYPTION_IDENTITY_FILE is not set/);
      expect(refused.out).not.toMatch(/\n\s+at /); // no stack trace
      expect(await relations(target.pool)).toBe(0);
      const ok = await runCli(['restore', '--key', encrypted.key, '--target-url', url], {
        ...env,
        BACKUP_ENCRYPTION_IDENTITY_FILE: alice.file,
      });
      expect(ok.code, ok.out).toBe(0);
      expect(ok.out).not.toMatch(/AGE-SECRET-KEY-1[0-9A-Z]{20}/);
      expect(await tableCounts(target.pool)).toEqual(seeded);
    });
  });

  it('a key and manifest that disagree about encryption are not trusted', async () => {
    const deps = await backupDeps({ DATABASE_URL: db.url, BACKUP_DATABASES: db.name });
    const plain = await runBackup(deps, db.name);
    // the manifest of a plain backup claiming encryption
    const mfile = join(deps.dir, `${plain.key}.manifest.json`);
    writeFileSync(
      mfile,
      JSON.stringify({ ...plain, encryption: { format: 'age', recipients: [alice.recipient] } }),
    );
    const listing = await deps.catalog.list(db.name);
    expect(listing.good).toEqual([]);
    expect(listing.incomplete[0]).toMatchObject({ key: plain.key, deletable: false, reason: 'malformed' });
  });

  it('a recipients file that becomes unreadable or empty fails the backup: nothing is stored, never plaintext', async () => {
    const file = join(keys, 'recipients.txt');
    writeFileSync(file, `# the backup key\n${alice.recipient}\n`);
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      BACKUP_ENCRYPTION_RECIPIENTS_FILE: file,
    });
    const good = await runBackup(deps, db.name);
    expect(good.encryption?.recipients).toEqual([alice.recipient]);
    const stored = () =>
      existsSync(join(deps.dir, db.name)) ? readdirSync(join(deps.dir, db.name)).sort() : [];
    const before = stored();
    for (const breakIt of [
      () => writeFileSync(file, '# emptied\n'),
      () => writeFileSync(file, 'age1notavalidkeyatall\n'),
      () => {
        // root reads any file whatever its mode: unreadable is a folder in its place
        rmSync(file);
        mkdirSync(file);
      },
    ]) {
      breakIt();
      const err = await runBackup(deps, db.name).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupError);
      expect((err as BackupError).reason).toBe('encryption');
      expect((err as BackupError).message).toMatch(/not backed up/);
      expect(stored()).toEqual(before);
    }
  });
});

describe('encrypted dumps in S3', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startTestS3();
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('stores <key>.sql.gz.age that age -d | gunzip | psql restores, and pg-maintd restores with the identity', async () => {
    const bucket = await s3.createBucket();
    const deps = await backupDeps({
      DATABASE_URL: db.url,
      BACKUP_DATABASES: db.name,
      S3_BUCKET: bucket,
      S3_PREFIX: 'prod/',
      S3_ENDPOINT: s3.endpoint,
      S3_FORCE_PATH_STYLE: 'true',
      S3_REGION: s3.region,
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    });
    const manifest = await runBackup(deps, db.name);
    expect(manifest.key).toMatch(/\.sql\.gz\.age$/);
    const obj = await s3.client().send(new GetObjectCommand({ Bucket: bucket, Key: `prod/${manifest.key}` }));
    const bytes = Buffer.from(await obj.Body!.transformToByteArray());
    expect(bytes.length).toBe(manifest.size);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(manifest.sha256);
    const file = join(keys, 'from-s3.sql.gz.age');
    writeFileSync(file, bytes);
    await withEmptyDatabase(async (target) => {
      restoreByHand(file, alice.file, target.url);
      expect(await tableCounts(target.pool)).toEqual(seeded);
    });
    await withEmptyDatabase(async (target) => {
      await expect(restoreBackup(restoreOpts(deps, target.url, manifest.key, bob.file))).rejects.toThrow(
        alice.recipient,
      );
      expect(await relations(target.pool)).toBe(0);
      await restoreBackup(restoreOpts(deps, target.url, manifest.key, alice.file));
      expect(await tableDigest(target.pool)).toBe(await tableDigest(db.pool));
    });
    deps.storage.close();
  });
});
