// Every object pg-maintd writes is written once and never rewritten (so a store may lock each one
// for good): across dump backups, restore drills, WAL archiving (archive_command, in a child, and
// in-process), base backups and both retentions, no key is put twice, and no stored file is ever
// replaced or changed (its inode, size and modification time stay as they were).
import { chownSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../src/backup/backup.js';
import { catalogFor } from '../../src/backup/catalog-for.js';
import { applyRetention } from '../../src/backup/retention.js';
import type { Storage } from '../../src/backup/storage/storage.js';
import { runVerification } from '../../src/backup/verify.js';
import { takeBaseBackup } from '../../src/pitr/basebackup.js';
import { applyPitrRetention } from '../../src/pitr/retention.js';
import { pushWalFile } from '../../src/pitr/wal-push.js';
import { backupDeps, type TestDeps } from '../support/backup.js';
import { CLI, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const DAY = 86_400_000;
const pgUser = (() => {
  const [, , uid, gid] = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!
    .split(':');
  return { uid: Number(uid), gid: Number(gid) };
})();

/** A storage that records every key put, and fails a test that puts one twice. */
function recording(inner: Storage): { storage: Storage; puts: string[] } {
  const puts: string[] = [];
  const storage = new Proxy(inner, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (prop === 'putSmall')
        return (key: string, content: string) => {
          puts.push(key);
          return target.putSmall(key, content);
        };
      if (prop === 'putStream')
        return (key: string, body: Readable, opts: Parameters<Storage['putStream']>[2]) => {
          puts.push(key);
          return target.putStream(key, body, opts);
        };
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as Storage;
  return { storage, puts };
}

/** Every file under the store, with what would change if it were rewritten. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string) => {
    for (const e of readdirSync(p, { withFileTypes: true })) {
      const full = join(p, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.isFile()) {
        const st = statSync(full);
        out.set(relative(dir, full), `ino ${st.ino} size ${st.size} mtime ${st.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out;
}

let cluster: Awaited<ReturnType<typeof startPrivateCluster>>;
let store: string;
let client: pg.Client;

beforeAll(async () => {
  store = tempDir('pgmaintd-write-once-');
  chownSync(store, pgUser.uid, pgUser.gid);
  cluster = await startPrivateCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'BACKUP_DIR=${store} ${process.execPath} ${CLI} wal-push %p'`,
      wal_recycle: 'off',
    },
  });
  client = new pg.Client({ connectionString: cluster.url() });
  await client.connect();
  await client.query('CREATE TABLE items (id int PRIMARY KEY, note text)');
  await client.query(`INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 500) g`);
  // archive_command (as the postgres user) makes the store's WAL folders before anything of this
  // process (root) does: folders root made would be closed to it
  const f = (await client.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f')).rows[0]!.f;
  await waitFor(
    async () =>
      (await client.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver'))
        .rows[0]!.w,
    (w) => w !== null && w >= f,
    60_000,
  );
}, 120_000);

afterAll(async () => {
  await client?.end();
});

describe('write-once store', () => {
  it('no key is put twice and no stored object changes, across backups, drills, WAL archiving, base backups and retention', async () => {
    const base = await backupDeps({
      DATABASE_URL: cluster.url(),
      BACKUP_DATABASES: 'postgres',
      BACKUP_DIR: store,
    });
    const { storage, puts } = recording(base.storage);
    const deps: TestDeps = { ...base, storage, catalog: catalogFor(base.config, storage) };
    const seen = new Map<string, string>();
    /** Objects seen before must be unchanged now (deleted is fine: retention deletes). */
    const unchanged = (step: string) => {
      const now = snapshot(store);
      for (const [key, was] of seen) {
        const is = now.get(key);
        if (is !== undefined) expect(is, `${step}: ${key} was rewritten`).toBe(was);
      }
      for (const [key, is] of now) if (!seen.has(key)) seen.set(key, is);
    };

    await runBackup(deps, 'postgres');
    await runBackup(deps, 'postgres');
    unchanged('dump backups');
    // two drills of the same backup: two records, the first left as it was
    await runVerification(deps, 'postgres');
    await runVerification(deps, 'postgres');
    unchanged('restore drills');
    expect([...seen.keys()].filter((k) => k.includes('.verify-'))).toHaveLength(2);

    const pitrDeps = { config: deps.config, storage, logger: deps.logger };
    await takeBaseBackup(pitrDeps, { trigger: 'command' });
    await client.query('INSERT INTO items SELECT g, NULL FROM generate_series(501, 900) g');
    await takeBaseBackup(pitrDeps, { trigger: 'command' });
    unchanged('base backups (and archive_command meanwhile)');

    // WAL the server archived already, pushed again in-process (as a retried archive_command does)
    const sysid = readdirSync(join(store, 'pitr'))[0]!;
    // one the server archived already (its .done mark is there) and has not removed yet
    const archived = await waitFor(
      () =>
        Promise.resolve(
          readdirSync(join(cluster.dataDir, 'pg_wal', 'archive_status'))
            .filter((f) => /^[0-9A-F]{24}\.done$/.test(f))
            .map((f) => f.slice(0, 24))
            .find((f) => statSync(join(cluster.dataDir, 'pg_wal', f), { throwIfNoEntry: false })),
        ),
      (w) => w !== undefined,
      60_000,
    );
    const again = await pushWalFile({ storage, sysid }, join(cluster.dataDir, 'pg_wal', archived!));
    expect(again.kind).toBe('segment');
    unchanged('WAL pushed again');

    const later = new Date(Date.now() + 40 * DAY);
    await applyRetention(
      { ...deps, clockToleranceMs: deps.clockToleranceMs, databaseClock: deps.databaseClock },
      'postgres',
      { ...deps.config.retention, minCount: 1 },
      { now: later },
    );
    await applyPitrRetention(
      {
        storage,
        sysid,
        logger: deps.logger,
        clockToleranceMs: deps.clockToleranceMs,
        databaseClock: deps.databaseClock,
        incompleteGraceMs: DAY,
      },
      { retentionDays: 7, now: later },
    );
    unchanged('retention');

    const twice = puts.filter((k, i) => puts.indexOf(k) !== i);
    expect(twice, 'keys put more than once').toEqual([]);
    expect(puts.length).toBeGreaterThan(6);
  }, 300_000);
});
