// Bad input, table-driven, through the real CLI (bin/pg-maintd.js on the built dist/): each case
// must give one clear message saying what is wrong, where (the setting, flag, file or key) and how
// to fix it, the README's exit code, no stack trace, and no secret. The all-fields configuration
// sweep runs in-process (loadConfig, what check-config runs) and a handful through the CLI.
import { freePort } from '../../src/embedded/local-cluster.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { FIELDS, FIELD_NAMES, flagFor, type FieldName, type FieldSpec } from '../../src/config/fields.js';
import { EXIT } from '../../src/exit-codes.js';
import { noDefaults } from '../support/backup.js';
import { writeBackup } from '../support/crafted-backup.js';
import { getJson, spawnCli, waitFor, cliEnv } from '../support/daemon.js';
import { createTestDatabase, useTestDatabase } from '../support/postgres.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { seed } from '../support/seed.js';
import { tempDir } from '../support/temp.js';

const db = useTestDatabase();
const dir = tempDir('pgmaintd-badinput-');
const WRONG_PASSWORD = 'Wr0ng-pa55word-7f3a';

/** The CLI's env for `url` (its password moved to PGPASSWORD), backups in `dir`, no schedules. */
function envFor(url: string, extra: Record<string, string> = {}): Record<string, string> {
  return cliEnv(url, dir, { LOG_LEVEL: 'warn', ...extra });
}

async function run(args: string[], env: Record<string, string>) {
  const cli = spawnCli(args, env);
  const { code } = await cli.exited;
  return { code, out: cli.output() };
}

/** An operator error: no stack frames, no "SomeError:" dumps, whether printed or inside a JSON log line. */
function expectNoStackTrace(out: string) {
  expect(out, 'stack frame').not.toMatch(/\n\s+at \S/);
  expect(out, 'stack frame in a log line').not.toMatch(/\\n\s+at \S/);
  expect(out, 'error class dump').not.toMatch(/(^|[\s"])([A-Z]\w*)?Error: /m);
  expect(out, 'internal error').not.toMatch(/internal error/);
}

/** A loopback port where nothing listens. */
// ---------------------------------------------------------------------------------------------
// Configuration: every field gets a wrong value derived from its kind (the `allowed` text says the
// kind); a field no candidate breaks fails the test, so a new field is covered or noticed.

/** Candidates by kind, tried first; then generic ones. */
const BY_KIND: Array<[RegExp, string[]]> = [
  [/cron/i, ['61 * * * *', 'every night']],
  [/duration/i, ['5 fortnights', '-5s']],
  [/\bsize\b/i, ['12 parsecs', '1KiB', '99PiB']],
  [/name=duration/i, ['no_such_collector=1m', 'locks=5x', 'locks']],
  [/true or false/i, ['maybe']],
  [/time zone/i, ['Mars/Olympus_Mons']],
  [/URL/, ['mysql://db.internal/app', 'not a url']],
  [/database names/i, ['app,app', 'x'.repeat(64)]],
  [/integer|number/i, ['-1', '99999999999', '1.5', 'ten']],
  [/ \| /, ['sometimes']],
  [/bucket name/i, ['Not_A_Bucket']],
  [/region/i, ['eu west 1']],
  [/prefix/i, ['/absolute/', 'a/../b']],
  [/path|directory|file/i, ['/nonexistent/pg-maintd-bad-input']],
];
const GENERIC = ['-1', '99999999999', 'not valid ☃', '/nonexistent/pg-maintd-bad-input', '/abs/../x'];
/** Values only a config file can carry: a wrong type. */
const TYPED: unknown[] = [['a', 'list'], { a: 'mapping' }];

const BASE_URL = 'postgresql://pgmaintd@db.internal:5432/app';

function rejects(field: FieldName, value: unknown): ConfigError | undefined {
  const env: Record<string, string> = { DATABASE_URL: BASE_URL };
  let configFile: string | undefined;
  if (typeof value === 'string') env[field] = value;
  else {
    configFile = join(tempDir('pgmaintd-badcfg-'), 'config.json');
    writeFileSync(configFile, JSON.stringify({ [field]: value }));
  }
  try {
    loadConfig({ env, defaultsDir: noDefaults(), ...(configFile ? { configFile } : {}) });
    return undefined;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems.some((p) => p.field === field) ? err : undefined;
  }
}

function badValueFor(field: FieldName): { value: unknown; how: 'string' | 'typed' } | undefined {
  const allowed = FIELDS[field].allowed;
  const kinds = BY_KIND.filter(([re]) => re.test(allowed)).flatMap(([, v]) => v);
  for (const value of [...kinds, ...GENERIC]) if (rejects(field, value)) return { value, how: 'string' };
  for (const value of TYPED) if (rejects(field, value)) return { value, how: 'typed' };
  return undefined;
}

describe('configuration: every field with a wrong value (in-process, as check-config loads it)', () => {
  // Fields that accept any string (free text) can only be given a wrong type; listed for the report.
  const typedOnly: string[] = [];
  afterAll(() => {
    if (typedOnly.length)
      console.info(`fields that accept any string (only a wrong type is refused): ${typedOnly.join(', ')}`);
  });

  it.each(FIELD_NAMES.map((f) => [f]))(
    '%s: a wrong value is refused (exit 78), naming the field',
    (field) => {
      const bad = badValueFor(field);
      expect(
        bad,
        `no wrong value found for ${field}: give it a kind that validates, or a case here`,
      ).toBeDefined();
      if (bad!.how === 'typed') typedOnly.push(field);
      const err = rejects(field, bad!.value)!;
      expect(err.exitCode).toBe(EXIT.CONFIG);
      const text = err.describe();
      const line = text
        .split('\n')
        .find((l) => l.startsWith(`  - ${field} `) || l.startsWith(`  - ${field}:`));
      expect(line, text).toBeDefined();
      // what is wrong (the value, masked when secret), where it came from, and what is allowed
      expect(line).toMatch(/\(from (environment|file) /);
      expect(line).toMatch(/; expected \S/);
      if ((FIELDS[field] as FieldSpec).secret === true) expect(line).not.toContain(String(bad!.value));
      expect(text).toContain('fix: ');
      expectNoStackTrace(text);
    },
  );
});

describe('configuration through the CLI: `check-config` exits 78 and lists every problem', () => {
  const secret = 'hunter2-Secret-9d1c';
  const cases: Array<[FieldName, string, RegExp]> = [
    [
      'BACKUP_SCHEDULE',
      '61 * * * *',
      /a cron expression .*\(minute field "61": 61 is out of range; use 0-59\)$/,
    ],
    ['DATABASE_URL', `mysql://app:${secret}@db.internal/app`, /a postgres:\/\/ or postgresql:\/\/ URL/],
    ['S3_PART_SIZE', '1MiB', /a size from 5MiB to 5GiB/],
    ['BACKUP_TIMEOUT', '5 fortnights', /a duration from 1s to 7d/],
    ['DB_SSL_MODE', 'sometimes', /disable \| allow \| prefer \| require \| verify-ca \| verify-full/],
    ['BACKUP_COMPRESSION_LEVEL', '10', /an integer from 1 \(fastest\) to 9/],
    ['METRICS_QUERY_TEXT', 'maybe', /true or false/],
    ['METRICS_COLLECTOR_INTERVALS', 'locks=5x', /comma-separated name=duration/],
    ['SCHEDULE_TZ', 'Mars/Olympus_Mons', /an IANA time zone/],
    ['LEASE_TTL', '1s', /a duration from 2000 ms to 1 hour/],
  ];

  it('from the environment: each field named with its origin, the value, what is allowed; the password masked', async () => {
    const env: Record<string, string> = {};
    for (const [field, value] of cases) env[field] = value;
    const r = await run(['check-config'], env);
    expect(r.code, r.out).toBe(EXIT.CONFIG);
    expect(r.out).toContain(`pg-maintd: invalid configuration: ${cases.length} problems:`);
    for (const [field, , allowed] of cases) {
      const line = r.out
        .split('\n')
        .find((l) => l.startsWith(`  - ${field} (from environment ${field}): got `));
      expect(line, `${field} in:\n${r.out}`).toBeDefined();
      expect(line).toMatch(allowed);
    }
    expect(r.out).toContain('mysql://app:****@db.internal/app');
    expect(r.out).not.toContain(secret);
    expect(r.out).toMatch(/fix: fix the settings above .*then run `pg-maintd check-config`/);
    expectNoStackTrace(r.out);
  });

  it('from a flag and from a config file: the origin says which', async () => {
    const file = join(tempDir('pgmaintd-badcfg-'), 'pg-maintd.yaml');
    writeFileSync(file, 'BACKUP_RETENTION_DAYS: 0\nS3_BUKET: backups\n');
    const r = await run(['check-config', '--config', file, '--db-pool-max', '0'], { DATABASE_URL: BASE_URL });
    expect(r.code, r.out).toBe(EXIT.CONFIG);
    expect(r.out).toContain(
      `  - DB_POOL_MAX (from flag ${flagFor('DB_POOL_MAX')}): got "0"; expected an integer from 1 to 1000`,
    );
    expect(r.out).toContain(
      `  - BACKUP_RETENTION_DAYS (from file ${file}): got "0"; expected an integer number of days from 1`,
    );
    expect(r.out).toMatch(/ {2}- S3_BUKET \(from file .*\): .*did you mean S3_BUCKET\?/);
    expectNoStackTrace(r.out);
  });

  it('a password in a --database-url flag is refused and never echoed', async () => {
    const r = await run(['check-config', '--database-url', `postgresql://app:${secret}@db.internal/app`], {});
    expect(r.code).toBe(EXIT.CONFIG);
    expect(r.out).toMatch(
      /DATABASE_URL \(from flag --database-url\): got "postgresql:\/\/app:\*\*\*\*@db\.internal\/app"; expected no password on the command line/,
    );
    expect(r.out).not.toContain(secret);
    expectNoStackTrace(r.out);
  });
});

// ---------------------------------------------------------------------------------------------
// The database cannot be used: a wrong password, an unknown host, a closed port, a missing database.

type DbFault = 'wrong password' | 'unknown host' | 'closed port' | 'missing database';
const FAULTS: Array<[DbFault, RegExp, RegExp]> = [
  ['wrong password', /password authentication failed/, /check the user and password/],
  ['unknown host', /ENOTFOUND|EAI_AGAIN|nonexistent\.invalid/, /the host name does not resolve/],
  ['closed port', /ECONNREFUSED/, /is PostgreSQL running and listening there\?/],
  [
    'missing database',
    /database "no_such_db_badinput" does not exist/,
    /create the database, or fix its name/,
  ],
];

let port = 0;
let goodKey = '';
let goodEnv: Record<string, string> = {};

/** The env (and, for restore, the target URL) with the fault applied; the password goes in PGPASSWORD. */
function faulty(fault: DbFault, url = db.url): { env: Record<string, string>; target: string } {
  const env = envFor(url);
  const u = new URL(env.DATABASE_URL!);
  if (fault === 'wrong password') env.PGPASSWORD = WRONG_PASSWORD;
  if (fault === 'unknown host') u.hostname = 'nonexistent.invalid';
  if (fault === 'closed port') u.port = String(port);
  if (fault === 'missing database') u.pathname = '/no_such_db_badinput';
  env.DATABASE_URL = u.toString();
  return { env, target: u.toString() };
}

beforeAll(async () => {
  port = await freePort(); // nothing listens there once it is handed out
  await seed(db.pool, 10, 1);
  goodEnv = envFor(db.url);
  const r = await run(['backup'], goodEnv);
  expect(r.code, r.out).toBe(0);
  goodKey = new RegExp(`(${db.name}/${db.name}_\\d{8}_\\d{6}-[0-9a-f]{8}\\.sql\\.gz)`).exec(r.out)![1]!;
});

describe.each(FAULTS)('the database: %s', (fault, detail, fix) => {
  const check = (out: string, setting: string) => {
    expect(out).toMatch(/cannot use the database at \S+:\d+\/\S+: /);
    expect(out).toMatch(detail);
    expect(out).toMatch(fix);
    expect(out).toContain(setting);
    expect(out).not.toContain(WRONG_PASSWORD);
    expectNoStackTrace(out);
  };

  it('`backup` exits 1 (a database failed) saying which database and why', async () => {
    const { env } = faulty(fault);
    const r = await run(['backup'], env);
    expect(r.code, r.out).toBe(EXIT.FAILURE);
    const database = new URL(env.DATABASE_URL!).pathname.slice(1);
    expect(r.out).toContain(`pg-maintd: backup of ${database} failed: `);
    check(r.out, 'DATABASE_URL');
  });

  it('`migrate up` exits 69', async () => {
    const r = await run(['migrate', 'up'], faulty(fault).env);
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    check(r.out, 'DATABASE_URL');
  });

  it('`restore` exits 69, pointing at --target-url; nothing is restored', async () => {
    const { env, target } = faulty(fault);
    const r = await run(['restore', '--key', goodKey, '--target-url', target], env);
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    check(r.out, '--target-url');
  });

  it('`verify` exits 69 and records no drill result (the backup is not to blame)', async () => {
    const r = await run(['verify', '--key', goodKey], faulty(fault).env);
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    check(r.out, 'DATABASE_URL');
    expect(() => readFileSync(join(dir, `${goodKey}.verify.json`))).toThrow();
  });

  const stops = fault === 'wrong password' || fault === 'missing database';
  it(
    stops
      ? '`run` (MIGRATE_ON_START) stops at start-up with exit 69 and the fix'
      : '`run` waits for the database (readyz 503 with the reason), and drains on SIGTERM with exit 0',
    async () => {
      const cli = spawnCli(['run'], {
        ...faulty(fault).env,
        MIGRATE_ON_START: 'true',
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: '0',
        LOG_LEVEL: 'info',
      });
      if (stops) {
        const { code } = await cli.exited;
        expect(code, cli.output()).toBe(EXIT.UNAVAILABLE);
        const fatal = cli.lines().find((l) => l.msg.startsWith('start-up stopped: '));
        expect(fatal, cli.output()).toBeDefined();
        check(`${fatal!.msg}\n${String(fatal!.hint)}`, 'DATABASE_URL');
      } else {
        const listening = await cli.waitForLog((l) => l.msg === 'http server listening');
        await cli.waitForLog((l) => l.msg.startsWith('database unreachable: migrations'));
        const base = `http://127.0.0.1:${(listening.address as { port: number }).port}`;
        const ready = await waitFor(
          () => getJson(`${base}/readyz`),
          (r) => r.status === 503 && r.body.reason === 'unreachable',
          10_000,
        );
        // /readyz is open to anyone: the reason in a word, the server's error text in the log only
        expect(JSON.stringify(ready.body)).not.toMatch(detail);
        await cli.waitForLog(
          (l) => l.msg.startsWith('database unreachable: not ready') && detail.test(JSON.stringify(l)),
        );
        cli.child.kill('SIGTERM');
        expect((await cli.exited).code).toBe(EXIT.OK);
      }
      expect(cli.output()).not.toContain(WRONG_PASSWORD);
      expectNoStackTrace(cli.output());
    },
  );
});

// ---------------------------------------------------------------------------------------------
// Bad backups and targets, bad migrations, bad command lines.

describe('bad backups, targets, migrations and command lines', () => {
  let s3: TestS3 | undefined;
  let target: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    target = await createTestDatabase('t_badinput_target');
  });
  afterAll(async () => {
    await target?.drop();
    await s3?.stop();
  });

  const restoreInto = (key: string) =>
    run(['restore', '--key', key, '--target-url', envFor(target.url).DATABASE_URL!], goodEnv);

  it('a missing S3 bucket: exit 69, naming the bucket and S3_BUCKET; the secret key never shown', async () => {
    s3 = await startTestS3();
    const secretKey = 'S3-secret-key-5e6f7a';
    const env = {
      ...goodEnv,
      S3_BUCKET: 'no-such-bucket-badinput',
      S3_ENDPOINT: s3.endpoint,
      S3_REGION: s3.region,
      S3_FORCE_PATH_STYLE: 'true',
      S3_MAX_ATTEMPTS: '1',
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.provider === 's3rver' ? secretKey : s3.secretAccessKey,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    };
    const list = await run(['backups', 'list'], env);
    expect(list.code, list.out).toBe(EXIT.UNAVAILABLE);
    expect(list.out).toMatch(/s3:\/\/no-such-bucket-badinput/);
    expect(list.out).toMatch(
      /fix: the bucket "no-such-bucket-badinput" does not exist: create it, or fix S3_BUCKET/,
    );
    // checked once before any dump: the store, not a database, is what is missing
    const backup = await run(['backup'], env);
    expect(backup.code, backup.out).toBe(EXIT.UNAVAILABLE);
    expect(backup.out).not.toMatch(/backup started/);
    expect(backup.out).toMatch(
      /^pg-maintd: cannot use the bucket \(s3:\/\/no-such-bucket-badinput\): .*\n {2}fix: the bucket "no-such-bucket-badinput" does not exist: create it, or fix S3_BUCKET/m,
    );
    for (const out of [list.out, backup.out]) {
      expect(out).not.toContain(secretKey);
      expectNoStackTrace(out);
    }
  });

  const BAD_BACKUPS: Array<[string, number, () => string, RegExp, RegExp]> = [
    [
      'a key with no manifest',
      EXIT.DATAERR,
      () => {
        const b = writeBackup(dir, db.name, 'SELECT 1;\n', {
          at: new Date(Date.UTC(2003, 0, 1)),
          manifest: false,
        });
        return b.key;
      },
      /cannot restore \S+: no manifest: the backup did not complete/,
      /fix: pick a good backup from `pg-maintd backups list`/,
    ],
    [
      'a key that is not a backup key',
      EXIT.USAGE,
      () => `${db.name}/not-a-backup.txt`,
      /is not a backup key \(expected <database>\/<database>_<YYYYMMDD_HHMMSS>-<run>\.sql\.gz/,
      /fix: pick a good backup from `pg-maintd backups list`/,
    ],
    [
      'a corrupted gzip (the manifest matches the corrupt bytes)',
      EXIT.DATAERR,
      () => {
        const bytes = Buffer.concat([
          gzipSync('CREATE TABLE corrupt_marker (id int);\n').subarray(0, 12),
          Buffer.from('not gzip at all, just noise'),
        ]);
        return writeBackup(dir, db.name, bytes, { at: new Date(Date.UTC(2003, 0, 2)) }).key;
      },
      /reading \S+ failed: .*/,
      /fix: the object is not valid gzip data; restore another backup/,
    ],
    [
      'a checksum mismatch (valid gzip, altered after the manifest was written)',
      EXIT.DATAERR,
      () => {
        const good = gzipSync('CREATE TABLE tampered_marker (id int);\n');
        const altered = Buffer.from(good);
        altered.writeUInt32LE(12345, 4); // the gzip MTIME: still valid gzip, other bytes
        return writeBackup(dir, db.name, altered, { at: new Date(Date.UTC(2003, 0, 3)), manifestOf: good })
          .key;
      },
      /checksum mismatch for \S+: the stored object hashes to [0-9a-f]{64}, the manifest says [0-9a-f]{64}/,
      /fix: the object was altered or corrupted in storage; restore another backup/,
    ],
  ];

  it.each(BAD_BACKUPS)(
    'restore of %s: exit %s, nothing restored',
    async (_name, code, make, message, fix) => {
      const r = await restoreInto(make());
      expect(r.code, r.out).toBe(code);
      expect(r.out).toMatch(message);
      expect(r.out).toMatch(fix);
      expectNoStackTrace(r.out);
      const t = await target.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`,
      );
      expect(t.rows[0]!.n).toBe(0); // the target is as it was: empty
    },
  );

  it('restore into a target that is not empty: exit 65, pointing to --clean; nothing changed', async () => {
    const r = await run(['restore', '--key', goodKey, '--target-url', envFor(db.url).DATABASE_URL!], goodEnv);
    expect(r.code, r.out).toBe(EXIT.DATAERR);
    expect(r.out).toMatch(
      /the target database \S+ is not empty \(\d+ tables, views or sequences\): nothing was restored/,
    );
    expect(r.out).toMatch(/fix: restore into an empty database, or pass --clean/);
    expectNoStackTrace(r.out);
  });

  it('a migration file with a syntax error: exit 65, naming the file, the line and the SQLSTATE; rolled back', async () => {
    const mdb = await createTestDatabase('t_badinput_migrate');
    try {
      const migrations = tempDir('pgmaintd-bad-migrations-');
      writeFileSync(join(migrations, '0001_ok.sql'), 'CREATE TABLE fine (id int);\n');
      writeFileSync(
        join(migrations, '0002_typo.sql'),
        'CREATE TABLE typo_marker (id int);\n\nCREAT INDEX ON typo_marker (id);\n',
      );
      const r = await run(['migrate', 'up'], envFor(mdb.url, { MIGRATIONS_DIR: migrations }));
      expect(r.code, r.out).toBe(EXIT.DATAERR);
      expect(r.out).toMatch(
        /pg-maintd: migration 0002_typo\.sql failed at line 3: syntax error at or near "CREAT" \(SQLSTATE 42601\); rolled back: nothing of it was applied or recorded\n {2}fix: fix 0002_typo\.sql/,
      );
      expectNoStackTrace(r.out);
      const t = await mdb.pool.query<{ fine: string | null; typo: string | null }>(
        `SELECT to_regclass('fine')::text AS fine, to_regclass('typo_marker')::text AS typo`,
      );
      expect(t.rows[0]).toEqual({ fine: 'fine', typo: null });
    } finally {
      await mdb.drop();
    }
  });

  const USAGE: Array<[string, RegExp]> = [
    ['frobnicate', /error: unknown command 'frobnicate'/],
    ['migrate sideways', /error: unknown command 'sideways'/],
    ['backup --no-such-flag', /error: unknown option '--no-such-flag'/],
    [
      'check-config --db-pool-maks 3',
      /error: unknown option '--db-pool-maks'\n\(Did you mean --db-pool-max\?\)/,
    ],
    ['restore --latest', /error: required option '--target-url <url>' not specified/],
    ['restore --latest --key x --target-url postgresql://u@h/db', /give exactly one of --latest and --key/],
  ];
  it.each(USAGE)(
    'usage error `pg-maintd %s`: exit 64, saying what is wrong and where to look',
    async (command, message) => {
      const r = await run(command.split(' '), goodEnv);
      expect(r.code, r.out).toBe(EXIT.USAGE);
      expect(r.out).toMatch(message);
      expectNoStackTrace(r.out);
    },
  );
});
