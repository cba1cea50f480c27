/**
 * Encrypted globals on real servers with the real pg_dumpall, psql and `age` CLI: the cluster's roles
 * go through the dumps' pipeline, so with recipients set they are stored age-encrypted after gzip,
 * readable by hand with `age -d | gunzip`, and `restore --globals` needs the identity, checked before
 * a single role is created.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGE_MAGIC } from '../../src/backup/encryption.js';
import { runGlobalsBackup } from '../../src/backup/globals-backup.js';
import { listGlobals } from '../../src/backup/globals-catalog.js';
import { restoreGlobals } from '../../src/backup/globals-restore.js';
import { OperatorError } from '../../src/core/errors.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { backupDeps, type TestDeps } from '../support/backup.js';
import { runCli, cliEnv } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { ageKeyPair } from '../support/age-keys.js';
import { tempDir } from '../support/temp.js';

const keys = tempDir('pgmaintd-age-keys-');
const keyPair = (name: string) => ageKeyPair(keys, name);
const alice = keyPair('alice.txt');
const bob = keyPair('bob.txt');

async function query(url: string, text: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text);
  } finally {
    await c.end();
  }
}
const rolesOn = async (url: string) =>
  (await query(url, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'enc\\_%' ORDER BY 1`)).rows.map(
    (r: { rolname: string }) => r.rolname,
  );

describe('encrypted globals', () => {
  let source: LocalCluster;
  let fresh: LocalCluster;
  let deps: TestDeps;

  beforeAll(async () => {
    [source, fresh] = await Promise.all([startPrivateCluster(), startPrivateCluster()]);
    await query(source.url(), 'CREATE ROLE enc_owner LOGIN CONNECTION LIMIT 7');
    await query(source.url(), 'CREATE ROLE enc_reader NOLOGIN IN ROLE enc_owner');
    deps = await backupDeps({
      DATABASE_URL: source.url(),
      BACKUP_DATABASES: 'postgres',
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    });
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled([source?.stop(), fresh?.stop()]);
  });

  it('stores .sql.gz.age, readable by hand with age -d | gunzip, the manifest naming the recipient', async () => {
    const g = await runGlobalsBackup(deps);
    expect(g.key).toMatch(/^globals\/\d{8}_\d{6}-[0-9a-f]{8}\.sql\.gz\.age$/);
    expect(g.encryption).toEqual({ format: 'age', recipients: [alice.recipient] });
    const file = join(deps.dir, g.key);
    const head = execFileSync('head', ['-c', String(AGE_MAGIC.length), file], { encoding: 'utf8' });
    expect(head).toBe(AGE_MAGIC);
    // size and checksum are those of the stored bytes: checked without any key
    const sha = execFileSync('sha256sum', [file], { encoding: 'utf8' }).split(' ')[0];
    expect(sha).toBe(g.sha256);
    const text = execFileSync('sh', ['-c', 'age -d -i "$ID" "$FILE" | gunzip'], {
      env: { ...process.env, ID: alice.file, FILE: file },
      encoding: 'utf8',
    });
    expect(text).toContain('CREATE ROLE enc_owner;');
    expect(text).toMatch(/GRANT enc_owner TO enc_reader/);
    // the listing trusts it without the identity
    expect((await listGlobals(deps.catalog)).good.map((x) => x.key)).toEqual([g.key]);
  }, 120_000);

  it('restore --globals without the identity, or with the wrong one, names the recipient and creates no role', async () => {
    for (const [identityFile, said] of [
      [undefined, /BACKUP_ENCRYPTION_IDENTITY_FILE is not set/],
      [bob.file, /no identity in BACKUP_ENCRYPTION_IDENTITY_FILE matches/],
    ] as const) {
      const err = await restoreGlobals({
        catalog: deps.catalog,
        logger: deps.logger,
        ssl: deps.config.db.ssl,
        clientBinDir: undefined,
        targetUrl: fresh.url(),
        identityFile,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OperatorError);
      expect((err as OperatorError).message).toMatch(said);
      expect((err as OperatorError).message).toContain(alice.recipient);
      expect((err as OperatorError).hint).toBeTruthy();
      expect(await rolesOn(fresh.url())).toEqual([]);
    }
  });

  it('the CLI applies them with the identity, and lists them as encrypted', async () => {
    const env = cliEnv(source.url(), deps.dir);
    const listed = await runCli(['backups', 'list', '--globals'], env);
    expect(listed.code).toBe(0);
    expect(listed.out).toMatch(/\.sql\.gz\.age .* age: age1/);
    const target = new URL(fresh.url());
    target.password = '';
    const refused = await runCli(['restore', '--globals', '--target-url', target.toString()], env);
    expect(refused.code).not.toBe(0);
    expect(refused.out).toContain(alice.recipient);
    expect(refused.out).not.toMatch(/\n\s+at /); // no stack trace
    expect(await rolesOn(fresh.url())).toEqual([]);
    const done = await runCli(['restore', '--globals', '--target-url', target.toString()], {
      ...env,
      PGPASSWORD: decodeURIComponent(new URL(fresh.url()).password), // the target's
      BACKUP_ENCRYPTION_IDENTITY_FILE: alice.file,
    });
    expect(done.code, done.out).toBe(0);
    expect(done.out).toMatch(/2 roles created/);
    expect(await rolesOn(fresh.url())).toEqual(['enc_owner', 'enc_reader']);
    const limit = await query(fresh.url(), `SELECT rolconnlimit FROM pg_roles WHERE rolname = 'enc_owner'`);
    expect(limit.rows[0].rolconnlimit).toBe(7);
  }, 120_000);
});
