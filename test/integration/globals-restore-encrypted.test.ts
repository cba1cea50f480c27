/**
 * `restore --globals --latest` (or --key) with an encrypted dump: both objects' identities are
 * checked before anything reaches the target's server. Roles created for a dump that then cannot be
 * opened would be left behind on a server that was to stay untouched.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { runGlobalsBackup } from '../../src/backup/globals-backup.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { backupDeps } from '../support/backup.js';
import { cliEnv, runCli } from '../support/daemon.js';
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

describe('restore --globals with an encrypted dump', () => {
  let source: LocalCluster;
  let fresh: LocalCluster;
  const store = tempDir('pgmaintd-globals-enc-');
  let pw: string;
  const freshUrl = (db = 'postgres') => fresh.url(db, undefined, pw);

  beforeAll(async () => {
    [source, fresh] = await Promise.all([startPrivateCluster(), startPrivateCluster()]);
    await query(source.url(), 'CREATE ROLE app_reader NOLOGIN');
    await query(source.url(), 'CREATE DATABASE appdb');
    await query(
      source.url('appdb'),
      'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); GRANT SELECT ON t TO app_reader',
    );
    // the CLI passes one password (PGPASSWORD) for both servers
    pw = decodeURIComponent(new URL(source.url()).password);
    await query(fresh.url(), `ALTER ROLE CURRENT_USER PASSWORD '${pw.replace(/'/g, "''")}'`);
    await query(freshUrl(), 'CREATE DATABASE target');
    // the globals stored plain (before encryption was turned on), the dump encrypted to alice
    const plain = await backupDeps({ DATABASE_URL: source.url('appdb'), BACKUP_DIR: store });
    await runGlobalsBackup(plain);
    const encrypted = await backupDeps({
      DATABASE_URL: source.url('appdb'),
      BACKUP_DATABASES: 'appdb',
      BACKUP_DIR: store,
      BACKUP_ENCRYPTION_RECIPIENTS: alice.recipient,
    });
    await runBackup(encrypted, 'appdb');
  }, 180_000);
  afterAll(async () => {
    await Promise.allSettled([source?.stop(), fresh?.stop()]);
  });

  const target = () => {
    const u = new URL(freshUrl('target'));
    u.password = '';
    return u.toString();
  };
  const roles = async () =>
    (await query(freshUrl(), "SELECT count(*)::int AS n FROM pg_roles WHERE rolname = 'app_reader'")).rows[0]
      .n as number;

  it("a dump the identity cannot open is refused before the globals' roles are created", async () => {
    for (const identity of [undefined, bob.file]) {
      const r = await runCli(
        ['restore', '--globals', '--latest', '--database', 'appdb', '--target-url', target()],
        cliEnv(source.url('appdb'), store, identity ? { BACKUP_ENCRYPTION_IDENTITY_FILE: identity } : {}),
      );
      expect(r.code, r.out).not.toBe(0);
      expect(r.out).toContain(alice.recipient);
      expect(r.out).toMatch(/nothing was restored/);
      expect(await roles()).toBe(0);
    }
    // with alice's identity: the roles first, then the dump
    const ok = await runCli(
      ['restore', '--globals', '--latest', '--database', 'appdb', '--target-url', target()],
      cliEnv(source.url('appdb'), store, { BACKUP_ENCRYPTION_IDENTITY_FILE: alice.file }),
    );
    expect(ok.code, ok.out).toBe(0);
    expect(await roles()).toBe(1);
    expect((await query(freshUrl('target'), 'SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(2);
  }, 180_000);
});
