// Bad input, table-driven, through the real CLI (bin/pg-maintd.js on the built dist/): each case
// must give one clear message saying what is wrong, where (the setting, flag, file or key) and how
// to fix it, the README's exit code, no stack trace, and no secret. The all-fields configuration
// sweep runs in-process (loadConfig and its preflight, what check-config runs) and a handful through the CLI.
import { freePort } from '../../src/core/free-port.js';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preflight } from '../../src/cli/preflight.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { FIELDS, FIELD_NAMES, flagFor, type FieldName, type FieldSpec } from '../../src/config/fields.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { drillRecords, noDefaults } from '../support/backup.js';
import { writeBackup } from '../support/crafted-backup.js';
import { getJson, spawnCli, startDaemon, waitFor, cliEnv } from '../support/daemon.js';
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
    preflight(loadConfig({ env, defaultsDir: noDefaults(), ...(configFile ? { configFile } : {}) }));
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

describe('encryption settings through the CLI: check-config exits 78 naming the setting; no identity shown', () => {
  const keys = tempDir('pgmaintd-badinput-age-');
  const key = join(keys, 'key.txt');
  execFileSync('age-keygen', ['-o', key], { stdio: 'ignore' });
  const recipient = execFileSync('age-keygen', ['-y', key], { encoding: 'utf8' }).trim();
  const identity = readFileSync(key, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('AGE-SECRET-KEY-'))!;
  // the right shape, a wrong bech32 checksum: only age itself can tell
  const last = recipient.at(-1) === 'q' ? 'p' : 'q';
  const badChecksum = `${recipient.slice(0, -1)}${last}`;
  const file = (name: string, text: string) => {
    const path = join(keys, name);
    writeFileSync(path, text);
    return path;
  };
  const folder = join(keys, 'a-folder');
  mkdirSync(folder);
  const cases: Array<[string, Record<string, string>, string, RegExp]> = [
    [
      'a recipient with a wrong checksum',
      { BACKUP_ENCRYPTION_RECIPIENTS: badChecksum },
      'BACKUP_ENCRYPTION_RECIPIENTS',
      /not a valid age public key/,
    ],
    [
      'a secret key given as a recipient',
      { BACKUP_ENCRYPTION_RECIPIENTS: identity },
      'BACKUP_ENCRYPTION_RECIPIENTS',
      /secret key/,
    ],
    [
      'an empty recipients file',
      { BACKUP_ENCRYPTION_RECIPIENTS_FILE: file('empty.txt', '# nobody\n') },
      'BACKUP_ENCRYPTION_RECIPIENTS_FILE',
      /holds no recipient/,
    ],
    [
      'a recipients file with a wrong checksum',
      { BACKUP_ENCRYPTION_RECIPIENTS_FILE: file('bad.txt', `${badChecksum}\n`) },
      'BACKUP_ENCRYPTION_RECIPIENTS_FILE',
      /not a valid age public key/,
    ],
    [
      'an identity file that cannot be read (a folder)',
      { BACKUP_ENCRYPTION_IDENTITY_FILE: folder },
      'BACKUP_ENCRYPTION_IDENTITY_FILE',
      /cannot read .*EISDIR/,
    ],
    [
      'an identity file holding a public key, no identity',
      { BACKUP_ENCRYPTION_IDENTITY_FILE: file('public.txt', `${recipient}\n`) },
      'BACKUP_ENCRYPTION_IDENTITY_FILE',
      /holds no age identity/,
    ],
  ];
  it.each(cases)('%s', async (_name, extra, field, why) => {
    const r = await run(['check-config'], envFor(db.url, extra));
    expect(r.code, r.out).toBe(EXIT.CONFIG);
    const line = r.out.split('\n').find((l) => l.startsWith(`  - ${field} `));
    expect(line, r.out).toBeDefined();
    expect(line).toMatch(why);
    expect(r.out).not.toContain(identity);
    expectNoStackTrace(r.out);
  });

  it('good settings: check-config shows the recipients and the identity file path, never the identity', async () => {
    const r = await run(
      ['check-config'],
      envFor(db.url, { BACKUP_ENCRYPTION_RECIPIENTS: recipient, BACKUP_ENCRYPTION_IDENTITY_FILE: key }),
    );
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(recipient);
    expect(r.out).toContain(key);
    expect(r.out).not.toContain(identity);
  });
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
    [
      'MAINTENANCE_SCHEDULE',
      '0 3 * * MON-FRY',
      /\(day-of-week field "MON-FRY": "FRY" is not a number or a name; use 0-7, sun-sat, dL or d#n\)$/,
    ],
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

  it('S3 Object Lock that cannot hold: without S3_BUCKET, and locked for fewer days than a retention keeps', async () => {
    const noBucket = await run(['check-config'], { DATABASE_URL: BASE_URL, S3_OBJECT_LOCK: 'governance' });
    expect(noBucket.code, noBucket.out).toBe(EXIT.CONFIG);
    expect(noBucket.out).toMatch(
      / {2}- S3_OBJECT_LOCK \(from environment S3_OBJECT_LOCK\): got "governance"; expected off without S3_BUCKET/,
    );
    const short = await run(['check-config'], {
      DATABASE_URL: BASE_URL,
      S3_BUCKET: 'backups',
      S3_OBJECT_LOCK: 'compliance',
      S3_OBJECT_LOCK_DAYS: '7',
      BACKUP_RETENTION_DAYS: '30',
    });
    expect(short.code, short.out).toBe(EXIT.CONFIG);
    expect(short.out).toMatch(
      / {2}- S3_OBJECT_LOCK_DAYS \(from environment S3_OBJECT_LOCK_DAYS\): got "7"; expected at least BACKUP_RETENTION_DAYS \(30\)/,
    );
    expectNoStackTrace(noBucket.out + short.out);
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

  it('unknown environment variables with a setting\'s prefix: warned, with "did you mean"; others left alone', async () => {
    const env = {
      DATABASE_URL: BASE_URL,
      BACKUP_SHEDULE: '0 3 * * *',
      DB_SSLMODE: 'disable',
      S3_BUCKET_NAME: 'backups',
      METRICS_FOO: 'x',
      // other software's, sharing a prefix or not
      HTTP_PROXY: 'http://proxy.internal:3128',
      WEB_CONCURRENCY: '2',
      PG_MAJOR: '17',
      METRICS_SERVICE_HOST: '10.0.0.7', // a Kubernetes Service named "metrics"
      METRICS_PORT_9187_TCP_ADDR: '10.0.0.7',
      PGPASSWORD: 'x',
      NODE_ENV: 'production',
      AWS_REGION: 'eu-west-1',
    };
    const r = await run(['check-config'], env);
    expect(r.code, r.out).toBe(EXIT.OK);
    const warned = r.out
      .split('\n')
      .filter((l) => l.startsWith('warning: environment variable '))
      .map((l) => l.replace(/^warning: /, ''));
    expect(warned).toEqual([
      'environment variable BACKUP_SHEDULE is not a pg-maintd setting and is ignored (did you mean BACKUP_SCHEDULE?)',
      'environment variable DB_SSLMODE is not a pg-maintd setting and is ignored (did you mean DB_SSL_MODE?)',
      'environment variable METRICS_FOO is not a pg-maintd setting and is ignored; `pg-maintd help settings` lists the settings',
      'environment variable S3_BUCKET_NAME is not a pg-maintd setting and is ignored (did you mean S3_BUCKET?)',
    ]);
    expect(r.out).not.toContain('disable'); // a value is never shown
    // and at the start of a command, in its log
    const backup = await run(['backup'], { ...goodEnv, BACKUP_SHEDULE: '0 3 * * *' });
    expect(backup.code, backup.out).toBe(EXIT.OK);
    const line = backup.out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .find((l) => l.msg.includes('BACKUP_SHEDULE'));
    expect(line, backup.out).toMatchObject({
      level: 40,
      msg: 'environment variable BACKUP_SHEDULE is not a pg-maintd setting and is ignored (did you mean BACKUP_SCHEDULE?)',
    });
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
  [
    'wrong password',
    /password authentication failed for user "\S+" \(the password came from PGPASSWORD\)/,
    /the server refused the password: check the user in \S+ and the password where it came from/,
  ],
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
    expect(drillRecords(dir, goodKey)).toEqual([]);
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
// A first run's connection mistakes: no password, a passfile others may read, TLS against a server
// without it. The harness's server asks every client for a password (scram-sha-256) and has no TLS.

/** The env without any password: an empty HOME (no ~/.pgpass) and no PGPASSWORD. */
function withoutPassword(): Record<string, string> {
  const home = tempDir('pgmaintd-home-');
  const env: Record<string, string> = envFor(db.url, { HOME: home });
  delete env.PGPASSWORD;
  return env;
}

describe('no password given, and the server asks for one', () => {
  const NO_PASSWORD =
    /: the server asks for a password and none was given\n {2}fix: give the password in PGPASSWORD, or in a passfile \(a line host:port:database:user:password in ~\/\.pgpass, mode 0600, or in the file PGPASSFILE names\)/;
  const restoreArgs = () => ['restore', '--key', goodKey, '--target-url', envFor(db.url).DATABASE_URL!];
  const COMMANDS: Array<[string, () => string[], number]> = [
    ['migrate status', () => ['migrate', 'status'], EXIT.UNAVAILABLE],
    ['migrate up', () => ['migrate', 'up'], EXIT.UNAVAILABLE],
    ['backup', () => ['backup'], EXIT.FAILURE], // a database failed: exit 1, whatever the cause
    ['doctor', () => ['doctor'], EXIT.UNAVAILABLE],
    ['maintenance run', () => ['maintenance', 'run'], EXIT.UNAVAILABLE],
    ['maintenance run --dry-run (the plan)', () => ['maintenance', 'run', '--dry-run'], EXIT.UNAVAILABLE],
    ['verify', () => ['verify', '--key', goodKey], EXIT.UNAVAILABLE],
    ['restore', restoreArgs, EXIT.UNAVAILABLE],
  ];

  it.each(COMMANDS)('`%s` says no password was given and where to put one', async (_name, args, code) => {
    const r = await run(args(), withoutPassword());
    expect(r.code, r.out).toBe(code);
    expect(r.out).toMatch(NO_PASSWORD);
    expect(r.out).not.toMatch(/SASL|client password must be a string/);
    expectNoStackTrace(r.out);
  });

  it('for DATABASE_URL the fix also names DATABASE_URL_FILE; for --target-url it does not', async () => {
    const migrate = await run(['migrate', 'status'], withoutPassword());
    expect(migrate.out).toMatch(/, or in the URL in the file DATABASE_URL_FILE names/);
    const restore = await run(restoreArgs(), withoutPassword());
    expect(restore.out).toMatch(NO_PASSWORD);
    expect(restore.out).not.toMatch(/DATABASE_URL_FILE/);
  });

  /** A passfile with the harness's password, in the empty HOME, with this mode. */
  const passfile = (mode: number, name = '.pgpass') => {
    const env = withoutPassword();
    const u = new URL(db.url);
    const password = decodeURIComponent(u.password).replace(/[:\\]/g, '\\$&');
    const file = join(env.HOME!, name);
    writeFileSync(
      file,
      `# pg-maintd test\n${u.hostname}:${u.port}:*:${decodeURIComponent(u.username)}:${password}\n`,
    );
    chmodSync(file, mode);
    return { env, file };
  };

  it("~/.pgpass (mode 0600) serves pg-maintd's own connections and pg_dump's", async () => {
    const { env } = passfile(0o600);
    const r = await run(['backup'], env);
    expect(r.code, r.out).toBe(EXIT.OK);
    expect(r.out).toMatch(/backup of \S+: /);
  });

  it('a URL without a user: PGUSER is the user of the daemon, of its passfile line and of pg_dump', async () => {
    const { env } = passfile(0o600);
    const u = new URL(db.url);
    const user = decodeURIComponent(u.username);
    u.username = '';
    u.password = '';
    const r = await run(['backup'], { ...env, DATABASE_URL: u.toString(), PGUSER: user });
    expect(r.code, r.out).toBe(EXIT.OK);
    expect(r.out).toMatch(/backup of \S+: /);
  });

  it('PGPASSFILE names the passfile; PGPASSWORD alone works too', async () => {
    const { env, file } = passfile(0o600, 'elsewhere.conf');
    const viaFile = await run(['migrate', 'status'], { ...env, PGPASSFILE: file });
    expect(viaFile.out).toMatch(/^VER\s+NAME/m);
    const viaEnv = await run(['migrate', 'status'], {
      ...withoutPassword(),
      PGPASSWORD: decodeURIComponent(new URL(db.url).password),
    });
    expect(viaEnv.out).toMatch(/^VER\s+NAME/m);
  });

  it('a passfile others may read is ignored, as libpq ignores it, and the fix says so', async () => {
    const { env, file } = passfile(0o644);
    const r = await run(['migrate', 'status'], env);
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    expect(r.out).toMatch(NO_PASSWORD);
    expect(r.out).toContain(
      `the passfile ${file} is ignored because group or others may read it: chmod 600 ${file}`,
    );
    expectNoStackTrace(r.out);
  });

  it('a wrong password: the message says where it came from', async () => {
    const r = await run(['migrate', 'status'], { ...envFor(db.url), PGPASSWORD: WRONG_PASSWORD });
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    expect(r.out).toMatch(
      /password authentication failed for user "\S+" \(the password came from PGPASSWORD\)/,
    );
    expect(r.out).toMatch(
      /fix: the server refused the password: check the user in DATABASE_URL and the password where it came from/,
    );
    expect(r.out).not.toContain(WRONG_PASSWORD);
    expectNoStackTrace(r.out);
  });
});

describe('TLS against a server without it', () => {
  it('DB_SSL_MODE=verify-full, set: exit 69, and the fix says how to connect without TLS', async () => {
    const r = await run(['migrate', 'status'], envFor(db.url, { DB_SSL_MODE: 'verify-full' }));
    expect(r.code, r.out).toBe(EXIT.UNAVAILABLE);
    expect(r.out).toMatch(/The server does not support SSL connections/);
    expect(r.out).toMatch(
      /fix: the server has no TLS \(ssl = off\): set DB_SSL_MODE=disable \(or sslmode=disable in DATABASE_URL\) to connect without it, which is safe only on a trusted network or a Unix socket/,
    );
    expectNoStackTrace(r.out);
  });

  it('DB_SSL_MODE unset and the server on this machine: prefer, said once; backup (pg_dump too) works', async ({
    skip,
  }) => {
    const host = new URL(db.url).hostname;
    if (!/^(127\.|localhost$|\[::1\]$)/.test(host)) skip(`the harness's server is not local (${host})`);
    const env: Record<string, string> = envFor(db.url, { LOG_LEVEL: 'info' });
    delete env.DB_SSL_MODE;
    const r = await run(['backup'], env);
    expect(r.code, r.out).toBe(EXIT.OK);
    const notes = r.out.split('\n').filter((l) => l.includes('DB_SSL_MODE is not set'));
    expect(notes, r.out).toHaveLength(1);
    expect(notes[0]).toMatch(
      /plaintext otherwise \(prefer, libpq's default\); set DB_SSL_MODE=verify-full or require to insist on TLS/,
    );
    const check = await run(['check-config'], env);
    expect(check.out).toMatch(/^note: DB_SSL_MODE is not set and the database is on this machine/m);
    // a remote host keeps verify-full: nothing said, nothing relaxed
    const remote = await run(['check-config'], { ...env, DATABASE_URL: BASE_URL });
    expect(remote.code, remote.out).toBe(EXIT.OK);
    expect(remote.out).not.toMatch(/DB_SSL_MODE is not set/);
  });
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

  it('`run` against a database that holds other objects and no migration history: left alone, a warning says how to adopt it', async () => {
    const mdb = await createTestDatabase('t_badinput_notempty');
    try {
      await mdb.pool.query(`CREATE EXTENSION file_fdw; CREATE SERVER files FOREIGN DATA WRAPPER file_fdw`);
      await mdb.pool.query(
        `CREATE FOREIGN TABLE hostname (line text) SERVER files OPTIONS (filename '/etc/hostname')`,
      );
      const env = envFor(mdb.url, { LOG_LEVEL: 'info', MIGRATE_ON_START: 'true' });
      const d = await startDaemon(env);
      try {
        const warned = await d.waitForLog((l) => l.msg.startsWith('start-up migrations skipped'), 30_000);
        expect(warned.level).toBe(40);
        expect(warned.msg).toMatch(
          /the database holds 1 object\(s\) of its own \(foreign table public\.hostname\) and no migration history: the start-up migrations leave it alone/,
        );
        expect(String(warned.hint)).toMatch(
          /run `pg-maintd migrate up`.*`pg-maintd migrate baseline`.*set MIGRATE_ON_START=false/,
        );
        const text = await (await fetch(`${d.base}/metrics`)).text();
        expect(text).toMatch(/^pgmaintd_migrations_skipped\{reason="not_empty"\} 1$/m);
        expect(text).not.toMatch(/^pgmaintd_migrations_failed\{reason="\w+"\} 1$/m);
        const t = await mdb.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_class WHERE relname IN ('users', 'projects', 'tasks', 'pgmaintd_migrations')`,
        );
        expect(t.rows[0]!.n).toBe(0);
        expectNoStackTrace(d.output());
      } finally {
        d.child.kill('SIGTERM');
        expect((await d.exited).code).toBe(EXIT.OK);
      }
      // `migrate baseline` there refuses: the schema it would mark as migrated is not there
      const baseline = await run(['migrate', 'baseline'], env);
      expect(baseline.code, baseline.out).toBe(EXIT.DATAERR);
      expect(baseline.out).toMatch(
        /cannot baseline: the database lacks users, projects, tasks\n {2}fix: .*run `pg-maintd migrate up`/,
      );
      // `migrate up` by hand is the adoption: it builds the schema beside the foreign table
      const up = await run(['migrate', 'up'], env);
      expect(up.code, up.out).toBe(0);
      expect(up.out.match(/^applied 0\d{3}_/gm)).toHaveLength(7);
    } finally {
      await mdb.drop();
    }
  });

  it('`backups list` with nothing stored: says where it looked, for which database, and what to do', async () => {
    const empty = tempDir('pgmaintd-badinput-empty-');
    const r = await run(['backups', 'list'], cliEnv(db.url, empty, { LOG_LEVEL: 'warn' }));
    expect(r.code, r.out).toBe(0);
    expect(r.out).toBe(
      `no backups found: looked in ${empty} for database ${db.name}\n` +
        '  to take one now: pg-maintd backup\n' +
        '  if backups should be there: check BACKUP_DIR (or set S3_BUCKET for S3) and BACKUP_DATABASES (or --database), the settings the backups were taken with\n',
    );
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
