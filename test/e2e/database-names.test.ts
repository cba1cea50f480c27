// Names are data. Every database name PostgreSQL allows works end to end (backup, list, restore,
// drill, retention, metrics), each in a folder of its own that decodes back to its name; a name
// cannot reach another database's folder, pass for a temporary file, or point a restore elsewhere.
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/core/exit-codes.js';
import { CLI, cliEnv, runCli, startDaemon, waitFor } from '../support/daemon.js';
import { adminUrl, withDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const r = randomBytes(3).toString('hex');
const NAMES = [
  `app/eu_${r}`,
  `sales.partial-eu_${r}`,
  `zz/../t1_${r}`,
  `t1_${r}`, // where zz/../t1 would have landed
  `o'brien "db", ${r}`,
  `データ_${r}`,
  `back\\slash_${r}`,
  `dbname=other_${r}`,
];
const DAY = 86_400_000;
const dir = tempDir('pgmaintd-names-');
let admin: pg.Client;
let env: Record<string, string>;
let configFile: string;

function marker(name: string): string {
  return `marker_${NAMES.indexOf(name)}`;
}

async function onDatabase<T>(name: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  // the name as a connection parameter: a URL would have to encode it (and a connection string wins
  // over `database` in pg's options)
  const u = new URL(adminUrl());
  const c = new pg.Client({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: name,
  });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const tablesOf = (name: string) =>
  onDatabase(name, async (c) =>
    (
      await c.query<{ n: string }>(
        "SELECT relname AS n FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1",
      )
    ).rows.map((x) => x.n),
  );

beforeAll(async () => {
  admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  for (const name of NAMES) {
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    await onDatabase(name, (c) =>
      c.query(
        `CREATE TABLE public.${marker(name)} AS SELECT generate_series(1, ${NAMES.indexOf(name) + 2}) AS id`,
      ),
    );
  }
  env = cliEnv(withDatabase(adminUrl(), 'postgres'), dir, { LOG_LEVEL: 'warn' });
  // a list in a config file takes any name, commas and all
  configFile = join(tempDir('pgmaintd-names-cfg-'), `names-${r}.json`); // beside the store, not in it
  writeFileSync(configFile, JSON.stringify({ BACKUP_DATABASES: NAMES }));
});

afterAll(async () => {
  for (const name of NAMES)
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
  await admin.end();
});

describe('database names in the store', () => {
  it('backs up every database into a folder of its own, lists, restores, drills and exports each', async () => {
    const backup = await runCli(['backup', '--config', configFile], env);
    expect(backup.code, backup.out).toBe(0);
    // one folder per database, none of them shared, none escaping the directory
    expect(readdirSync(dir).length).toBe(NAMES.length);
    const list = await runCli(['backups', 'list', '--json', '--config', configFile], env);
    expect(list.code, list.out).toBe(0);
    const listed = JSON.parse(list.out) as Array<{
      database: string;
      backups: Array<{ key: string }>;
      incomplete: unknown[];
    }>;
    expect(listed.map((d) => [d.database, d.backups.length, d.incomplete.length])).toEqual(
      NAMES.map((n) => [n, 1, 0]),
    );

    for (const name of NAMES) {
      const target = `restore_${NAMES.indexOf(name)}_${r}`;
      await admin.query(`CREATE DATABASE ${target}`);
      try {
        const restore = await runCli(
          [
            'restore',
            '--latest',
            '--database',
            name,
            '--target-url',
            withDatabase(env.DATABASE_URL!, target),
            '--config',
            configFile,
          ],
          env,
        );
        expect(restore.code, `${name}: ${restore.out}`).toBe(0);
        expect(await tablesOf(target)).toEqual([marker(name)]);
      } finally {
        await admin.query(`DROP DATABASE ${target} WITH (FORCE)`);
      }
      const verify = await runCli(['verify', '--database', name, '--config', configFile], env);
      expect(verify.code, `${name}: ${verify.out}`).toBe(0);
      expect(verify.out).toMatch(/^ok: .*: 1 tables compared$/m);
    }

    const d = await startDaemon({ ...env, LOG_LEVEL: 'info', CONFIG_FILE: configFile });
    try {
      const text = await waitFor(
        async () => (await fetch(`${d.base}/metrics`)).text(),
        (t) => NAMES.every((n) => t.includes(`pgmaintd_backup_stored{database=${JSON.stringify(n)}} 1`)),
      );
      expect(text).toContain(
        `pgmaintd_backup_verify_last_result{database=${JSON.stringify(NAMES[0])},result="ok"} 1`,
      );
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  }, 180_000); // a dozen CLI runs (backup, list, restore and drill per database): minutes on a busy host

  it('retention after the grace period deletes no backup of a database whose name holds ".partial-"', async () => {
    // the files look a week old to retention's leftover rule
    const old = new Date(Date.now() - 7 * DAY);
    for (const folder of readdirSync(dir))
      for (const f of readdirSync(join(dir, folder))) utimesSync(join(dir, folder, f), old, old);
    const retention = await runCli(['retention', '--config', configFile], {
      ...env,
      BACKUP_INCOMPLETE_GRACE: '1m',
    });
    expect(retention.code, retention.out).toBe(0);
    expect(retention.out).not.toMatch(/^deleted/m);
    const list = await runCli(['backups', 'list', '--json', '--database', NAMES[1]!], env);
    expect((JSON.parse(list.out) as Array<{ backups: unknown[] }>)[0]!.backups).toHaveLength(1);
  });

  it('a --database PostgreSQL cannot have, or a --key outside the store, is refused with exit 64 and no stack trace', async () => {
    for (const args of [
      ['backup', '--database', 'x'.repeat(64)],
      ['backups', 'list', '--database', 'é'.repeat(40)],
      ['restore', '--key', '../../etc/passwd', '--target-url', env.DATABASE_URL!],
      ['restore', '--key', `${NAMES[3]}/../../x_20261202_061402.sql.gz`, '--target-url', env.DATABASE_URL!],
      ['verify', '--key', '..'],
    ]) {
      const out = await runCli(args, env);
      expect(out.code, `${args.join(' ')}: ${out.out}`).toBe(EXIT.USAGE);
      expect(out.out).not.toMatch(/\n\s+at \S/);
    }
    // a byte that is not UTF-8 (bash's $'\xff'): Node would read U+FFFD, a name nobody typed
    const raw = spawnSync(
      'bash',
      ['-c', `exec "$0" "$1" backups list --database $'\\xff'`, process.execPath, CLI],
      {
        env: { PATH: process.env.PATH, LOG_FORMAT: 'json', ...env },
        encoding: 'utf8',
      },
    );
    expect(raw.status, raw.stdout + raw.stderr).toBe(EXIT.USAGE);
    expect(raw.stdout + raw.stderr).toMatch(/--database .*: it is not valid UTF-8/);
    // ".." is a name PostgreSQL allows: it is simply a database that does not exist here
    const dots = await runCli(['backup', '--database', '..'], env);
    expect(dots.code, dots.out).toBe(EXIT.FAILURE);
    expect(dots.out).toMatch(/backup of \.\. failed: .*database "\.\." does not exist/);
    expect(readdirSync(dir)).toHaveLength(NAMES.length); // nothing new, in here or beside it
  });

  it('restore --target-url into a database named "dbname=…" restores into that database, never into the one its name points to', async () => {
    const other = `precious_${r}`;
    const named = `dbname=${other}`;
    await admin.query(`CREATE DATABASE ${other}`);
    await onDatabase(other, (c) =>
      c.query('CREATE TABLE public.precious (id int); INSERT INTO public.precious VALUES (1)'),
    );
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(named)}`);
    try {
      for (const format of ['custom', 'plain']) {
        const cdir = tempDir('pgmaintd-names-eq-');
        const fenv = cliEnv(withDatabase(adminUrl(), NAMES[0]!), cdir, {
          LOG_LEVEL: 'warn',
          BACKUP_FORMAT: format,
        });
        expect((await runCli(['backup'], fenv)).code).toBe(0);
        const target = withDatabase(fenv.DATABASE_URL, 'x').replace(/\/x$/, `/${encodeURIComponent(named)}`);
        expect(target).toMatch(/\/dbname%3Dprecious_/);
        const restore = await runCli(['restore', '--latest', '--target-url', target, '--clean'], fenv);
        expect(restore.code, `${format}: ${restore.out}`).toBe(0);
        expect(await tablesOf(named)).toEqual([marker(NAMES[0]!)]);
        expect(await tablesOf(other)).toEqual(['precious']);
      }
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(named)} WITH (FORCE)`);
      await admin.query(`DROP DATABASE IF EXISTS ${other} WITH (FORCE)`);
    }
  });
});
