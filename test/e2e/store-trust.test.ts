// What is in the backup store is data, never code. Whoever can write to the backup directory (or the
// bucket) plants backups here by hand, with manifests whose size and SHA-256 match: a psql
// meta-command in a plain dump must never run on this host, a table name in a manifest must never
// run as SQL, a backup dated in the future is never the latest nor counted toward the retention
// minimum, and with BACKUP_SIGNING_KEY_FILE nothing unsigned or altered is restored, drilled or
// counted. Everything runs through the real CLI and daemon against a real PostgreSQL and psql.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { drillRecords } from '../support/backup.js';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { findServerBinaries } from '../../src/programs/server-binaries.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { writeBackup } from '../support/crafted-backup.js';
import { cliEnv, runCli, spawnCli, startDaemon, waitFor } from '../support/daemon.js';
import { adminUrl, createTestDatabase, useTestDatabase, withDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';
import { tempDir, tempPath } from '../support/temp.js';

const db = useTestDatabase();
const DAY = 86_400_000;

/** `script`, then an SQL comment, stored (not compressed) in gzip so that the object has `size` bytes. */
function sameSizeGzip(script: string, size: number): Buffer {
  for (let pad = size - script.length; pad >= 0; pad--) {
    const out = gzipSync(`${script}-- ${'x'.repeat(pad)}\n`, { level: 0 });
    if (out.length === size) return out;
  }
  throw new Error(`no stored gzip of ${size} bytes`);
}

function freshDir(label: string): string {
  return tempDir(`pgmaintd-trust-${label}-`);
}

function envFor(dir: string, extra: Record<string, string> = {}) {
  return cliEnv(db.url, dir, { LOG_LEVEL: 'warn', BACKUP_DATABASES: db.name, ...extra });
}

async function emptyTarget(): Promise<{
  url: string;
  name: string;
  drop: () => Promise<void>;
  tables: () => Promise<string[]>;
}> {
  const t = await createTestDatabase('t_trust_target');
  const u = new URL(t.url);
  u.password = '';
  return {
    url: u.toString(),
    name: t.name,
    drop: t.drop,
    tables: async () =>
      (
        await t.pool.query<{ n: string }>(
          "SELECT relname AS n FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1",
        )
      ).rows.map((r) => r.n),
  };
}

async function roleExists(name: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  try {
    return (await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).rowCount === 1;
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  await seed(db.pool, 20, 2);
});

describe('a psql meta-command in a plain dump never runs', () => {
  const marker = () => tempPath('pgmaintd-pwned-');
  const SCRIPTS: Array<[string, (m: string) => string]> = [
    ['\\! at the start', (m) => `\\! touch ${m}; env > ${m}.env\nCREATE TABLE public.restored (id int);\n`],
    [
      "\\! after pg_dump's own \\restrict and \\unrestrict",
      (m) =>
        `--\n\\restrict abc123\nCREATE TABLE public.restored (id int);\n\\unrestrict abc123\n\\! touch ${m}\n`,
    ],
    ['\\unrestrict with a guessed key, then \\!', (m) => `\\unrestrict 0000\n\\! touch ${m}\n`],
    ['\\o into a pipe', (m) => `\\o | touch ${m}\nSELECT 1;\n`],
    ['\\copy to a program', (m) => `\\copy (SELECT 1) TO PROGRAM 'touch ${m}'\n`],
    ['\\set with a shell backtick', (m) => `\\set x \`touch ${m}\`\n`],
  ];

  it.each(SCRIPTS)(
    '%s: `verify` and `restore --latest` refuse it, exit 65, and nothing runs',
    async (_what, script) => {
      const dir = freshDir('meta');
      const m = marker();
      writeBackup(dir, db.name, script(m), { rowCounts: { 'public.restored': { rows: 0, exact: true } } });
      const verify = await runCli(['verify'], envFor(dir));
      expect(existsSync(m), 'the shell command ran during the drill').toBe(false);
      expect(existsSync(`${m}.env`)).toBe(false);
      expect(verify.code, verify.out).toBe(EXIT.FAILURE);
      expect(verify.out).toMatch(/FAILED: .*psql meta-command, which a restore never runs/);

      const target = await emptyTarget();
      try {
        const restore = await runCli(['restore', '--latest', '--target-url', target.url], envFor(dir));
        expect(existsSync(m), 'the shell command ran during the restore').toBe(false);
        expect(restore.code, restore.out).toBe(EXIT.DATAERR);
        expect(restore.out).toMatch(
          /psql meta-command, which a restore never runs \(psql is in restricted mode\): nothing was restored/,
        );
        expect(restore.out).toMatch(
          /fix: pg_dump writes none but \\restrict: someone who can write to the store altered it/,
        );
        expect(await target.tables()).toEqual([]); // one transaction: nothing of the script stayed
      } finally {
        await target.drop();
      }
    },
  );

  it('a psql too old to restrict meta-commands is refused before anything runs (exit 69), naming what to install', async () => {
    // a psql that reports 15.13: the version answer is the one part emulated (a wrapper script)
    const bin = freshDir('oldpsql');
    const real = findServerBinaries(15).binDir;
    writeFileSync(
      join(bin, 'psql'),
      `#!/bin/sh\nif [ "$1" = --version ]; then echo 'psql (PostgreSQL) 15.13'; exit 0; fi\nexec ${real}/psql "$@"\n`,
      { mode: 0o755 },
    );
    for (const tool of ['pg_dump', 'pg_restore']) symlinkSync(join(real, tool), join(bin, tool));
    const dir = freshDir('oldpsql-store');
    const m = tempPath('pgmaintd-pwned-');
    writeBackup(dir, db.name, `\\! touch ${m}\n`);
    const target = await emptyTarget();
    try {
      const r = await runCli(
        ['restore', '--latest', '--target-url', target.url],
        envFor(dir, { PG_CLIENT_BIN_DIR: bin }),
      );
      expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
      expect(r.out).toMatch(
        /psql 15\.13 cannot restrict meta-commands \(\\restrict came in 13\.22, 14\.19, 15\.14, 16\.10, 17\.6 and 18\)/,
      );
      expect(r.out).toMatch(/fix: install a current PostgreSQL client .* or point PG_CLIENT_BIN_DIR at one/);
      expect(existsSync(m)).toBe(false);
    } finally {
      await target.drop();
    }
  });

  it("a real pg_dump's script (with its own \\restrict) restores as before", async () => {
    const dir = freshDir('real');
    const backup = await runCli(['backup'], envFor(dir));
    expect(backup.code, backup.out).toBe(0);
    const target = await emptyTarget();
    try {
      const restore = await runCli(['restore', '--latest', '--target-url', target.url], {
        ...envFor(dir),
        LOG_LEVEL: 'info',
      });
      expect(restore.code, restore.out).toBe(0);
      expect(await target.tables(), `${backup.out}\n${restore.out}`).toEqual(['projects', 'tasks', 'users']);
    } finally {
      await target.drop();
    }
  });
});

describe('a restore that brought less than the backup holds', () => {
  it('is never reported as done: the tables the manifest counted are looked for in the target', async () => {
    const dir = freshDir('short');
    const backup = await runCli(['backup'], envFor(dir));
    expect(backup.code, backup.out).toBe(0);
    // the manifest counted one table more than the script creates (as if the restore lost one)
    const key = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(backup.out)![1]!;
    const file = join(dir, `${key}.manifest.json`);
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as { rowCounts: Record<string, unknown> };
    manifest.rowCounts['public.ghost'] = { rows: 0, exact: true };
    writeFileSync(file, JSON.stringify(manifest));
    const target = await emptyTarget();
    try {
      const restore = await runCli(['restore', '--latest', '--target-url', target.url], envFor(dir));
      expect(restore.code, restore.out).toBe(EXIT.FAILURE);
      expect(restore.out).toMatch(/psql finished, but 1 of the backup's tables are not in .*: public\.ghost/);
      expect(restore.out).toMatch(/fix: do not rely on this target/);
      expect(restore.out).not.toMatch(/\n\s+at \S/);
    } finally {
      await target.drop();
    }
  });
});

describe('a data object replaced under its manifest', () => {
  it('runs nothing: the checksum is checked before the first byte reaches psql or pg_restore', async () => {
    // megabytes of backup: psql would run the first statement long before the last byte arrives
    const big = await createTestDatabase('t_trust_swap');
    await big.pool.query(
      'CREATE TABLE public.filler AS SELECT md5(g::text) AS v FROM generate_series(1, 100000) g',
    );
    for (const format of ['plain', 'custom']) {
      const dir = freshDir(`swap-${format}`);
      const env = cliEnv(big.url, dir, { LOG_LEVEL: 'warn', BACKUP_FORMAT: format });
      const backup = await runCli(['backup'], env);
      expect(backup.code, backup.out).toBe(0);
      const key = new RegExp(`${dir}/(\\S+\\.(?:sql|dump)\\.gz)`).exec(backup.out)![1]!;
      // another valid gzip object of exactly the same size (so the listing takes it for the backup),
      // whose script advances a sequence: a rollback does not undo that
      const size = readFileSync(join(dir, key)).length;
      writeFileSync(join(dir, key), sameSizeGzip("SELECT nextval('public.witness');\n", size));
      const target = await emptyTarget();
      try {
        const c = new pg.Client({ connectionString: withDatabase(adminUrl(), target.name) });
        await c.connect();
        await c.query('CREATE SEQUENCE public.witness');
        const restore = await runCli(['restore', '--latest', '--target-url', target.url, '--clean'], env);
        expect(restore.code, restore.out).toBe(EXIT.DATAERR);
        expect(restore.out).toMatch(
          /checksum mismatch for \S+: the stored object hashes to [0-9a-f]{64}, the manifest says/,
        );
        const seq = await c.query<{ called: boolean }>('SELECT is_called AS called FROM public.witness');
        await c.end();
        expect(seq.rows[0]!.called, 'the replaced object ran').toBe(false);
      } finally {
        await target.drop();
      }
    }
    await big.drop();
  });

  it('rewritten in place once the check passed: what runs is the checked copy, never the new bytes', async () => {
    const big = await createTestDatabase('t_trust_inplace');
    await big.pool.query(
      'CREATE TABLE public.filler AS SELECT md5(g::text) AS v FROM generate_series(1, 300000) g',
    );
    const dir = freshDir('inplace');
    const env = cliEnv(big.url, dir, { LOG_LEVEL: 'info' });
    const backup = await runCli(['backup'], env);
    expect(backup.code, backup.out).toBe(0);
    const key = new RegExp(`${dir}/(\\S+\\.sql\\.gz)`).exec(backup.out)![1]!;
    const path = join(dir, key);
    const payload = sameSizeGzip("COMMIT;\nSELECT nextval('public.witness');\n", readFileSync(path).length);
    const target = await emptyTarget();
    const c = new pg.Client({ connectionString: withDatabase(adminUrl(), target.name) });
    await c.connect();
    try {
      await c.query('CREATE SEQUENCE public.witness');
      const restore = spawnCli(['restore', '--latest', '--target-url', target.url, '--clean'], env);
      // the moment the restore begins to feed psql, the writer of the store rewrites the object in
      // place (same inode, same size): before, psql went on reading the new bytes from the store
      await restore.waitForLog((l) => l.msg === 'restore started');
      const fd = openSync(path, 'r+');
      writeSync(fd, payload, 0, payload.length, 0);
      closeSync(fd);
      const { code } = await restore.exited;
      expect(code, restore.output()).toBe(0);
      const seq = await c.query<{ called: boolean }>('SELECT is_called AS called FROM public.witness');
      expect(seq.rows[0]!.called, 'the rewritten bytes ran').toBe(false);
      expect(await target.tables()).toEqual(['filler']);
    } finally {
      await c.end();
      await target.drop();
      await big.drop();
    }
  }, 180_000); // a 300,000-row backup and restore through the CLI
});

describe('a table name in a manifest never runs as SQL', () => {
  it('a crafted rowCounts key is refused with the manifest, and the statement inside never runs', async () => {
    const dir = freshDir('rowcounts');
    const role = `pwned_${randomBytes(3).toString('hex')}`;
    writeBackup(dir, db.name, 'CREATE TABLE public.t (id int);\n', {
      rowCounts: { [`public.t; CREATE ROLE ${role}`]: { rows: 0, exact: true } },
    });
    const verify = await runCli(['verify'], envFor(dir));
    expect(await roleExists(role), 'the manifest ran SQL as pg-maintd').toBe(false);
    expect(verify.code, verify.out).not.toBe(0);
    expect(verify.out).toMatch(/no good backup of database/);
    const list = await runCli(['backups', 'list'], envFor(dir));
    expect(list.out).toMatch(/NOT TRUSTED: manifest \S+ is malformed: rowCounts\./);
  });

  it('odd but real table names are counted, quoted, by the drill', async () => {
    const other = await createTestDatabase('t_trust_odd');
    try {
      await other.pool
        .query(`CREATE SCHEMA "My ""Schema"""; CREATE TABLE "My ""Schema"""."t; DROP TABLE x --" (id int);
        INSERT INTO "My ""Schema"""."t; DROP TABLE x --" SELECT generate_series(1, 7)`);
      const dir = freshDir('odd');
      const env = cliEnv(other.url, dir, { LOG_LEVEL: 'warn' });
      expect((await runCli(['backup'], env)).code).toBe(0);
      const verify = await runCli(['verify'], env);
      expect(verify.code, verify.out).toBe(0);
      expect(verify.out).toMatch(/^ok: .*: 1 tables compared$/m);
    } finally {
      await other.drop();
    }
  });
});

describe('a backup dated in the future', () => {
  it('is listed as suspicious, never the latest, never counted toward the retention minimum', async () => {
    const dir = freshDir('future');
    const now = Date.now();
    const old = writeBackup(dir, db.name, 'CREATE TABLE public.from_40_days_ago (id int);\n', {
      at: new Date(now - 40 * DAY),
    });
    const kept = writeBackup(dir, db.name, 'CREATE TABLE public.from_35_days_ago (id int);\n', {
      at: new Date(now - 35 * DAY),
    });
    const future = writeBackup(dir, db.name, 'CREATE TABLE public.from_the_future (id int);\n', {
      at: new Date(now + 40 * DAY),
    });
    const env = envFor(dir, { BACKUP_RETENTION_MIN_COUNT: '1' });

    const list = await runCli(['backups', 'list', '--json'], env);
    const backups = (
      JSON.parse(list.out) as Array<{
        backups: Array<{ key: string; suspicious: { reason: string } | null }>;
      }>
    )[0]!.backups;
    expect(backups.find((b) => b.key === future.key)?.suspicious?.reason).toBe('future_dated');
    expect(backups.filter((b) => b.suspicious).map((b) => b.key)).toEqual([future.key]);
    const table = await runCli(['backups', 'list'], env);
    expect(table.out).toMatch(
      new RegExp(`${future.key}.*SUSPICIOUS: dated \\S+, \\d+ s ahead of the store's clock`),
    );

    const target = await emptyTarget();
    try {
      const restore = await runCli(['restore', '--latest', '--target-url', target.url], env);
      expect(restore.code, restore.out).toBe(0);
      expect(restore.out).toContain(`restored ${kept.key}`);
      expect(await target.tables()).toEqual(['from_35_days_ago']);
    } finally {
      await target.drop();
    }

    // past the 30 days, the minimum of one is the newest trusted backup: the future one does not count
    const retention = await runCli(['retention'], env);
    expect(retention.code, retention.out).toBe(0);
    expect(retention.out).toContain(`deleted ${old.key}`);
    expect(retention.out).toMatch(new RegExp(`keep +${kept.key} +\\(min-count`));
    expect(retention.out).toMatch(new RegExp(`keep +${future.key} +\\(misdated`));
    expect(existsSync(kept.path) && existsSync(future.path)).toBe(true);

    // the daemon's gauges: the newest trusted backup, and one suspicious
    const d = await startDaemon({ ...env, LOG_LEVEL: 'info' });
    try {
      const text = await waitFor(
        async () => (await fetch(`${d.base}/metrics`)).text(),
        (t) => t.includes('pgmaintd_backup_stored{'),
      );
      expect(text).toContain(`pgmaintd_backup_suspicious{database="${db.name}",reason="future_dated"} 1`);
      expect(text).toContain(`pgmaintd_backup_stored{database="${db.name}"} 1`);
      expect(text).toContain(
        `pgmaintd_backup_last_success_timestamp_seconds{database="${db.name}"} ${Date.parse(kept.manifest.finishedAt) / 1000}`,
      );
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });
});

describe('BACKUP_SIGNING_KEY_FILE', () => {
  it('signs what pg-maintd writes; nothing unsigned or altered is restored, drilled or counted; the key goes nowhere', async () => {
    const dir = freshDir('signed');
    const key = `k-${randomBytes(32).toString('base64url')}`;
    const keyFile = join(freshDir('key'), 'signing.key');
    writeFileSync(keyFile, `# pg-maintd signing key\n${key}\n`, { mode: 0o600 });
    const env = envFor(dir, { BACKUP_SIGNING_KEY_FILE: keyFile, LOG_LEVEL: 'info' });
    const outputs: string[] = [];
    const cli = async (args: string[], extra: Record<string, string> = {}) => {
      const r = await runCli(args, { ...env, ...extra });
      outputs.push(r.out);
      return r;
    };

    const first = await cli(['backup']);
    expect(first.code, first.out).toBe(0);
    const second = await cli(['backup']);
    expect(second.code, second.out).toBe(0);
    const keys = [first, second].map(
      (r) => new RegExp(`backup of \\S+: ${dir}/(\\S+\\.sql\\.gz)`).exec(r.out)![1]!,
    );
    const manifestOf = (k: string) => join(dir, `${k}.manifest.json`);
    expect(JSON.parse(readFileSync(manifestOf(keys[1]!), 'utf8')).signature).toMatchObject({
      algorithm: 'hmac-sha256',
    });

    // someone who can write to the store alters the newest manifest, and plants a backup of their own
    const altered = JSON.parse(readFileSync(manifestOf(keys[1]!), 'utf8')) as Record<string, unknown>;
    altered.rowCounts = {};
    writeFileSync(manifestOf(keys[1]!), JSON.stringify(altered));
    const planted = writeBackup(dir, db.name, 'CREATE TABLE public.planted (id int);\n', {
      at: new Date(Date.now() + 1000),
    });

    const list = await cli(['backups', 'list']);
    expect(list.out).toMatch(
      new RegExp(`${keys[1]}.*NOT TRUSTED: signature invalid: changed after it was signed, or forged`),
    );
    expect(list.out).toMatch(new RegExp(`${planted.key}.*NOT TRUSTED: signature missing`));

    const target = await emptyTarget();
    try {
      const latest = await cli(['restore', '--latest', '--target-url', target.url]);
      expect(latest.code, latest.out).toBe(0);
      expect(latest.out).toContain(`restored ${keys[0]}`); // the newest that checks
      const byKey = await cli(['restore', '--key', planted.key, '--target-url', target.url, '--clean']);
      expect(byKey.code, byKey.out).toBe(EXIT.DATAERR);
      expect(byKey.out).toMatch(
        /cannot restore \S+: signature missing: written without BACKUP_SIGNING_KEY_FILE, or by someone without the key/,
      );
      expect(byKey.out).toMatch(/pass --allow-unsigned/);
    } finally {
      await target.drop();
    }
    const target2 = await emptyTarget();
    try {
      const anyway = await cli([
        'restore',
        '--key',
        planted.key,
        '--target-url',
        target2.url,
        '--allow-unsigned',
      ]);
      expect(anyway.code, anyway.out).toBe(0);
      expect(anyway.out).toMatch(/restoring a backup whose signature does not check \(--allow-unsigned\)/);
      expect(await target2.tables()).toEqual(['planted']);
    } finally {
      await target2.drop();
    }

    const verify = await cli(['verify']);
    expect(verify.code, verify.out).toBe(0);
    expect(verify.out).toContain(`ok: ${keys[0]}`);
    const records = drillRecords(dir, keys[0]!);
    expect(records).toHaveLength(1);
    expect(JSON.parse(readFileSync(records[0]!, 'utf8')).signature).toBeDefined();

    // retention neither deletes nor counts them
    const retention = await cli(['retention'], {
      BACKUP_RETENTION_DAYS: '1',
      BACKUP_RETENTION_MIN_COUNT: '1',
    });
    expect(retention.code, retention.out).toBe(0);
    for (const k of [keys[1]!, planted.key]) expect(existsSync(join(dir, k)), k).toBe(true);

    const d = await startDaemon({ ...env, LOG_LEVEL: 'info' });
    let metrics = '';
    try {
      metrics = await waitFor(
        async () => (await fetch(`${d.base}/metrics`)).text(),
        (t) => t.includes('pgmaintd_backup_stored{'),
      );
      expect(metrics).toContain(
        `pgmaintd_backup_suspicious{database="${db.name}",reason="signature_invalid"} 1`,
      );
      expect(metrics).toContain(
        `pgmaintd_backup_suspicious{database="${db.name}",reason="signature_missing"} 1`,
      );
      expect(metrics).toContain(`pgmaintd_backup_stored{database="${db.name}"} 1`);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
    outputs.push(d.output(), metrics);
    for (const out of outputs) expect(out).not.toContain(key);
    for (const f of readdirSync(join(dir, db.name)))
      expect(readFileSync(join(dir, db.name, f)).includes(key), f).toBe(false);
  });

  it('a key file that is missing, empty or too short is a configuration error (exit 78), the key never shown', async () => {
    const dir = freshDir('badkey');
    const short = join(freshDir('key'), 'short.key');
    writeFileSync(short, 'too-short-a-key\n');
    for (const [file, why] of [
      ['/nonexistent/signing.key', /no such file/],
      [short, /key 1 has 15 bytes; each needs at least 32/],
    ] as const) {
      const r = await runCli(['check-config'], envFor(dir, { BACKUP_SIGNING_KEY_FILE: file }));
      expect(r.code, r.out).toBe(EXIT.CONFIG);
      expect(r.out).toMatch(why);
      expect(r.out).not.toContain('too-short-a-key');
    }
  });
});

describe("a database's folder swapped for a link by someone who can write the directory", () => {
  it('retention deletes nothing through it, lists nothing from it, and says why', async () => {
    const base = freshDir('link');
    const root = join(base, 'backups');
    const victim = join(base, 'elsewhere'); // an archive of the seed script's backups, say
    mkdirSync(root);
    mkdirSync(victim);
    const files = [
      `${db.name}_20250101_020000.sql.gz`,
      `${db.name}_20250102_020000.sql.gz`,
      'x.partial-deadbeef',
    ];
    const old = new Date(Date.now() - 3 * DAY);
    for (const f of files) {
      writeFileSync(join(victim, f), 'precious');
      utimesSync(join(victim, f), old, old);
    }
    symlinkSync(victim, join(root, db.name));
    const env = envFor(root);
    for (const args of [['retention'], ['backups', 'list']]) {
      const r = await runCli(args, env);
      expect(r.code, `${args.join(' ')}: ${r.out}`).not.toBe(0);
      expect(r.out).toMatch(/leads elsewhere \(to .*elsewhere\) through a symbolic link/);
      expect(r.out).not.toMatch(/\n\s+at \S/);
    }
    expect(readdirSync(victim).sort()).toEqual(files.sort());
  });
});
