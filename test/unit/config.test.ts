import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { renderConfig } from '../../src/cli/check-config.js';
import { FIELDS, FIELD_NAMES, type FieldName, type FieldSpec } from '../../src/config/fields.js';
import { preflight } from '../../src/cli/preflight.js';
import { ConfigError, loadConfig, PACKAGE_ROOT, type LoadInput } from '../../src/config/load.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { tempDir } from '../support/temp.js';

const URL_OK = 'postgresql://app:s3cr3t-pw@db.internal:5432/app';
const noDefaults = tempDir('cfg-none-');

/** Loads as every command does: the settings, then the files they name (the preflight). */
function load(input: Omit<LoadInput, 'defaultsDir'> & { defaultsDir?: string } = {}) {
  return preflight(
    loadConfig({ defaultsDir: noDefaults, ...input, env: { DATABASE_URL: URL_OK, ...input.env } }),
  );
}

function problemsOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

function tempFile(name: string, content: string): string {
  const path = join(tempDir('cfg-'), name);
  writeFileSync(path, content);
  return path;
}

// Invalid values for every field: wrong type, out of range, malformed.
const BAD: Record<FieldName, string[]> = {
  DATABASE_URL: ['not a url', 'mysql://u@h/db', 'http://h/db'],
  DATABASE_URL_FILE: ['/nonexistent/database-url'],
  DB_POOL_MIN: ['-1', 'two', '1.5', '1001'],
  DB_POOL_MAX: ['0', 'x', '1e3', '100000'],
  DB_POOL_IDLE_TIMEOUT: ['-5', 'soon', '5x', '2d'],
  DB_POOL_ACQUIRE_TIMEOUT: ['0', 'forever', '1.5ms', '2h'],
  DB_SSL_MODE: ['on', 'true', 'VERIFY-FULL', 'verify'],
  DB_SSL_REJECT_UNAUTHORIZED: ['maybe', '2', 'nope'],
  DB_SSL_ROOT_CERT: ['/nonexistent/ca.pem'],
  DB_SSL_CERT: ['/nonexistent/client.pem'],
  DB_SSL_KEY: ['/nonexistent/client.key'],
  BACKUP_SCHEDULE: ['every day', '61 * * * *', '* * *', '0 2 * * * * *'],
  SCHEDULE_TZ: ['Mars/Olympus', 'UTC+25'],
  LEASE_TTL: ['1s', '2h', 'a while', '-5s'],
  BACKUP_DATABASES: ['app,app', `app,${'x'.repeat(64)}`],
  BACKUP_FORMAT: ['directory', 'tar', 'sql'],
  BACKUP_OWNERSHIP: ['none', 'Keep', 'no-owner'],
  BACKUP_COMPRESSION_LEVEL: ['0', '10', 'max', '6.5'],
  BACKUP_COMPRESSION_THREADS: ['-1', '65', 'all'],
  BACKUP_DIR: ['   '],
  BACKUP_TIMEOUT: ['10ms', '8d', 'never'],
  BACKUP_FROM: ['replica', 'master', 'both'],
  BACKUP_MAX_STANDBY_LAG: ['2d', '-1s', 'soon'],
  BACKUP_LOCK_WAIT_TIMEOUT: ['500ms', '2d', 'forever'],
  BACKUP_ROW_COUNT_MAX_TABLE_SIZE: ['-1', 'lots', '1PB', '5 parsecs'],
  PG_CLIENT_BIN_DIR: ['/nonexistent/bin'],
  RESTORE_SPOOL_DIR: ['/nonexistent/spool'],
  BACKUP_SIGNING_KEY_FILE: ['/nonexistent/signing.key'],
  BACKUP_ENCRYPTION_RECIPIENTS: [
    'age1notakey',
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB',
    'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ',
    ',',
  ],
  BACKUP_ENCRYPTION_RECIPIENTS_FILE: ['/nonexistent/recipients.txt'],
  BACKUP_ENCRYPTION_IDENTITY_FILE: ['/nonexistent/identity.txt'],
  BACKUP_GLOBALS: ['yes please', '2'],
  BACKUP_GLOBALS_PASSWORDS: ['maybe', '-1'],
  CLOCK_SKEW_TOLERANCE: ['0', '500ms', '2d', 'lots'],
  S3_BUCKET: ['Bad_Bucket', 'ab', 'x'.repeat(64)],
  S3_PREFIX: ['/backups/', 'a/../b/'],
  S3_REGION: ['EU WEST', 'x'],
  S3_ENDPOINT: ['minio:9000', 'ftp://minio/'],
  S3_FORCE_PATH_STYLE: ['sometimes'],
  S3_CHECKSUM: ['WHEN_REQUIRED', 'off', 'crc32'],
  S3_SSE: ['aes256', 'kms'],
  S3_SSE_KMS_KEY_ID: ['key-without-sse'],
  S3_STORAGE_CLASS: ['COLD', 'standard'],
  S3_OBJECT_LOCK: ['on', 'GOVERNANCE', 'legal-hold'],
  S3_OBJECT_LOCK_DAYS: ['0', 'a month', '1.5', '36501'],
  S3_PART_SIZE: ['1MiB', '6GiB', 'big'],
  S3_MAX_ATTEMPTS: ['0', '21', 'many'],
  S3_REQUEST_TIMEOUT: ['0', '500ms', '2h', 'soon'],
  BACKUP_RETENTION_DAYS: ['0', '-3', 'forever'],
  BACKUP_RETENTION_MIN_COUNT: ['0', 'few'],
  BACKUP_KEEP_DAILY: ['-1', 'x'],
  BACKUP_KEEP_WEEKLY: ['-1', 'x'],
  BACKUP_KEEP_MONTHLY: ['-1', 'x'],
  BACKUP_INCOMPLETE_GRACE: ['1s', 'x'],
  BACKUP_VERIFY_SCHEDULE: ['weekly', '0 4 * * 8'],
  VERIFY_DATABASE_URL: ['mysql://u@h/db', 'nope'],
  WAL_ARCHIVE: ['on', 'true', 'archive_command', 'STREAM'],
  WAL_SLOT: ['', 'Bad-Slot', 'has space', 'x'.repeat(64), "sl'ot"],
  WAL_SPOOL_DIR: ['   '],
  WAL_PARTIAL_UPLOAD_INTERVAL: ['500ms', '11m', 'often', '-1s'],
  BASEBACKUP_SCHEDULE: ['weekly', '61 * * * *', '* * *'],
  PITR_RETENTION_DAYS: ['0', '3651', 'a month', '1.5'],
  PITR_DRILL_SCHEDULE: ['sometimes', '0 25 * * *'],
  PITR_HEARTBEAT_INTERVAL: ['100ms', '2h', 'x'],
  PG_SERVER_BIN_DIR: ['/nonexistent/pg/bin'],
  METRICS_INTERVAL: ['500ms', '2h', 'often'],
  METRICS_COLLECTOR_INTERVALS: [
    'stat_statements',
    'stat_statement=1m',
    'locks=500ms',
    'locks=2d',
    'locks=sometimes',
    'locks=1m,,oops',
  ],
  METRICS_DATABASES: ['app,app', `${'y'.repeat(70)}`],
  METRICS_STATEMENT_TIMEOUT: ['1ms', '1h', 'x'],
  METRICS_LOCK_TIMEOUT: ['1ms', '1h', 'x'],
  METRICS_DATABASE_SIZE_INTERVAL: ['10ms', '2d', 'x'],
  METRICS_LOCK_WAIT_LOG_AFTER: ['-1s', '2d', 'x'],
  METRICS_TABLES_LIMIT: ['0', '100001', 'all'],
  METRICS_MAX_CONNECTIONS: ['0', '101', '2.5', 'many'],
  METRICS_STATEMENTS_LIMIT: ['0', '10001', 'top'],
  METRICS_QUERY_TEXT: ['maybe'],
  METRICS_QUERY_TEXT_LENGTH: ['5', '10001', 'long'],
  MIGRATE_ON_START: ['sometimes'],
  MIGRATIONS_DIR: ['/nonexistent/migrations'],
  MIGRATE_LOCK_WAIT: ['10ms', '2d', 'x'],
  MIGRATE_LOCK_TIMEOUT: ['-1', '2h', 'x'],
  MAINTENANCE_SCHEDULE: ['nightly', '60 3 * * *'],
  MAINTENANCE_DATABASES: ['app,app', `app,${'x'.repeat(64)}`],
  MAINTENANCE_VACUUM_DEAD_RATIO: ['0', '1.5', '-0.2', '20%', 'x'],
  MAINTENANCE_VACUUM_MIN_DEAD_TUPLES: ['-1', '1.5', 'many', '1000000001'],
  MAINTENANCE_VACUUM_STALE_AFTER: ['-1s', '3651d', 'weekly'],
  MAINTENANCE_ANALYZE_STALE_AFTER: ['-1s', '3651d', 'weekly'],
  MAINTENANCE_REINDEX_BLOAT_RATIO: ['0', '2', '50%', 'x'],
  MAINTENANCE_REINDEX_MIN_SIZE: ['-1', 'big', '2PiB'],
  MAINTENANCE_LOCK_TIMEOUT: ['1ms', '11m', 'x'],
  MAINTENANCE_STATEMENT_TIMEOUT: ['-1s', '8d', 'forever'],
  HTTP_HOST: ['   ', 'http://0.0.0.0', '0.0.0.0:9188', 'my_host', '-bad.example'],
  HTTP_PORT: ['-1', '65536', 'http', '80.5'],
  WEB_CONFIG_FILE: ['/nonexistent/web-config.yml'],
  WEB_BEARER_TOKEN_FILE: ['/nonexistent/token'],
  READYZ_INTERVAL: ['10ms', '2m', 'often'],
  READYZ_TIMEOUT: ['1ms', '2m', 'x'],
  LIVENESS_MAX_LAG: ['1ms', '1h', 'x'],
  LOG_LEVEL: ['verbose', 'INFO', '10'],
  LOG_FORMAT: ['text', 'yaml'],
  SHUTDOWN_GRACE_PERIOD: ['-1s', '2h', 'later'],
};

describe('configuration', () => {
  it('has a bad-value case for every field', () => {
    expect(Object.keys(BAD).sort()).toEqual([...FIELD_NAMES].sort());
  });

  for (const name of FIELD_NAMES) {
    for (const bad of BAD[name]) {
      it(`rejects ${name}=${JSON.stringify(bad)} with exit 78, naming the field, value and what is allowed`, () => {
        const env: Record<string, string> = { [name]: bad };
        // a value of spaces is "unset" in the environment; give it through a file instead
        const input: LoadInput =
          bad.trim() === '' ? { configFile: tempFile('c.yaml', `${name}: "${bad}"\n`) } : { env };
        const err = problemsOf(() => load(input));
        expect(err.exitCode).toBe(EXIT.CONFIG);
        const p = err.problems.find((x) => x.field === name);
        expect(p, err.describe()).toBeDefined();
        expect(p!.allowed.length).toBeGreaterThan(5);
        const text = err.describe();
        expect(text).toContain(name);
        if (bad.startsWith('AGE-SECRET-KEY-')) expect(text).not.toContain(bad.slice(15));
        else if (!['DATABASE_URL', 'VERIFY_DATABASE_URL'].includes(name))
          expect(text).toContain(JSON.stringify(bad));
      });
    }
  }

  it('refuses an Object Lock shorter than the retention, or without a bucket', () => {
    const base = { DATABASE_URL: 'postgres://u@h/db' };
    const short = problemsOf(() =>
      loadConfig({
        defaultsDir: noDefaults,
        env: {
          ...base,
          S3_BUCKET: 'backups',
          S3_OBJECT_LOCK: 'compliance',
          S3_OBJECT_LOCK_DAYS: '7',
          BACKUP_RETENTION_DAYS: '30',
          WAL_ARCHIVE: 'stream',
          PITR_RETENTION_DAYS: '14',
        },
      }),
    );
    expect(short.problems.filter((p) => p.field === 'S3_OBJECT_LOCK_DAYS').map((p) => p.allowed)).toEqual([
      expect.stringContaining('BACKUP_RETENTION_DAYS (30)'),
      expect.stringContaining('PITR_RETENTION_DAYS (14)'),
    ]);
    const noBucket = problemsOf(() =>
      loadConfig({ defaultsDir: noDefaults, env: { ...base, S3_OBJECT_LOCK: 'governance' } }),
    );
    expect(noBucket.problems.map((p) => p.field)).toEqual(['S3_OBJECT_LOCK']);
    const ok = loadConfig({
      defaultsDir: noDefaults,
      env: { ...base, S3_BUCKET: 'backups', S3_OBJECT_LOCK: 'governance', BACKUP_RETENTION_DAYS: '9' },
    });
    expect(ok.config.s3.objectLock).toEqual({ mode: 'governance', days: 9 });
  });

  it('reads a recipients file without ever quoting a line of it', () => {
    const secret = 'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ';
    const file = tempFile('recipients.txt', `# ops team\n${secret}\n`);
    const err = problemsOf(() =>
      loadConfig({
        defaultsDir: noDefaults,
        env: { DATABASE_URL: 'postgres://u@h/db', BACKUP_ENCRYPTION_RECIPIENTS_FILE: file },
      }),
    );
    expect(err.describe()).toMatch(/BACKUP_ENCRYPTION_RECIPIENTS_FILE.*item 1 is a secret key/);
    expect(err.describe()).not.toContain('QQQQQQQQ');
    const empty = tempFile('empty.txt', '# nobody\n');
    expect(
      problemsOf(() =>
        loadConfig({
          defaultsDir: noDefaults,
          env: { DATABASE_URL: 'postgres://u@h/db', BACKUP_ENCRYPTION_RECIPIENTS_FILE: empty },
        }),
      ).describe(),
    ).toMatch(/holds no recipient/);
  });

  it('requires DATABASE_URL', () => {
    const err = problemsOf(() => loadConfig({ defaultsDir: noDefaults, env: {} }));
    expect(err.problems.map((p) => p.field)).toEqual(['DATABASE_URL']);
    expect(err.describe()).toMatch(/DATABASE_URL: not set; expected a postgres:\/\//);
  });

  it('reports every problem at once, not just the first', () => {
    const err = problemsOf(() =>
      load({
        env: {
          DB_POOL_MAX: 'x',
          HTTP_PORT: '99999',
          LOG_LEVEL: 'loud',
          DB_SSL_MODE: 'on',
          SHUTDOWN_GRACE_PERIOD: 'z',
        },
      }),
    );
    expect(err.problems.map((p) => p.field).sort()).toEqual(
      ['DB_POOL_MAX', 'DB_SSL_MODE', 'HTTP_PORT', 'LOG_LEVEL', 'SHUTDOWN_GRACE_PERIOD'].sort(),
    );
    expect(
      err
        .describe()
        .split('\n')
        .filter((l) => l.startsWith('  - ')),
    ).toHaveLength(5);
  });

  it('checks fields against each other', () => {
    const err = problemsOf(() => load({ env: { DB_POOL_MIN: '30', DB_POOL_MAX: '10' } }));
    expect(err.problems[0]).toMatchObject({ field: 'DB_POOL_MIN', allowed: 'at most DB_POOL_MAX (10)' });
    const cert = tempFile('client.pem', 'x');
    const err2 = problemsOf(() => load({ env: { DB_SSL_CERT: cert } }));
    expect(err2.problems[0]!.field).toBe('DB_SSL_KEY');
  });

  it('takes S3_CHECKSUM as set, else when_required for a custom S3_ENDPOINT and when_supported for AWS', () => {
    const endpoint = 'https://minio.internal:9000';
    expect(load({ env: { S3_BUCKET: 'backups' } }).config.s3.checksum).toBe('when_supported');
    expect(load({ env: { S3_BUCKET: 'backups', S3_ENDPOINT: endpoint } }).config.s3.checksum).toBe(
      'when_required',
    );
    for (const mode of ['when_supported', 'when_required'] as const)
      for (const env of [{}, { S3_ENDPOINT: endpoint }])
        expect(load({ env: { ...env, S3_BUCKET: 'backups', S3_CHECKSUM: mode } }).config.s3.checksum).toBe(
          mode,
        );
    const err = problemsOf(() => load({ env: { S3_CHECKSUM: 'WHEN_REQUIRED' } }));
    expect(err.describe()).toMatch(
      /S3_CHECKSUM \(from .*\): got "WHEN_REQUIRED"; expected when_supported \| when_required/,
    );
  });

  it('masks secrets in error output', () => {
    const err = problemsOf(() =>
      loadConfig({
        defaultsDir: noDefaults,
        env: { DATABASE_URL: 'mysql://app:hunter2-secret@db/app', HTTP_PORT: 'x' },
      }),
    );
    const text = err.describe();
    expect(text).toContain('mysql://app:****@db/app');
    expect(text).not.toContain('hunter2-secret');
  });

  it('refuses a password on the command line, where every user can read it', () => {
    const err = problemsOf(() => load({ flags: { DATABASE_URL: 'postgresql://app:argv-secret@h/db' } }));
    expect(err.describe()).toMatch(
      /DATABASE_URL \(from flag --database-url\).*no password on the command line/,
    );
    expect(err.describe()).not.toContain('argv-secret');
    expect(load({ flags: { DATABASE_URL: 'postgresql://app@h/db' } }).config.db.url).toBe(
      'postgresql://app@h/db',
    );
  });

  it('masks secrets in check-config output and shows where each value came from', () => {
    const loaded = load({ env: { PGPASSWORD: 'pgpass-secret' } });
    for (const json of [false, true]) {
      const out = renderConfig(loaded, json);
      expect(out).not.toContain('s3cr3t-pw');
      expect(out).toContain('postgresql://app:****@db.internal:5432/app');
      expect(out).toContain('environment DATABASE_URL');
      expect(out).toContain('built-in default');
    }
    expect(loaded.secrets).toEqual(['s3cr3t-pw', 'pgpass-secret']);
  });

  it("DB_SSL_MODE unset: prefer for a local host, verify-full elsewhere; a packager's own mode in default.yaml is kept", () => {
    const local = loadConfig({
      defaultsDir: noDefaults,
      env: { DATABASE_URL: 'postgresql://app@127.0.0.1/app' },
    });
    expect(local.config.db.ssl.modeDefaulted).toBe(true);
    expect(local.notices.join(' ')).toContain('prefer');
    const remote = loadConfig({
      defaultsDir: noDefaults,
      env: { DATABASE_URL: 'postgresql://app@db.internal/app' },
    });
    expect(remote.config.db.ssl.mode).toBe('verify-full');
    expect(remote.notices).toEqual([]);
    const defaultsDir = tempDir('cfg-defaults-');
    writeFileSync(join(defaultsDir, 'default.yaml'), 'DB_SSL_MODE: require\n');
    const packaged = loadConfig({ defaultsDir, env: { DATABASE_URL: 'postgresql://app@127.0.0.1/app' } });
    expect(packaged.config.db.ssl.mode).toBe('require');
    expect(packaged.config.db.ssl.modeDefaulted).toBe(false);
    expect(packaged.notices).toEqual([]);
  });

  it('applies precedence: flags > env > config file > config/default > built-in', () => {
    const defaultsDir = tempDir('cfg-defaults-');
    writeFileSync(
      join(defaultsDir, 'default.yaml'),
      'DB_POOL_MAX: 11\nDB_POOL_MIN: 1\nHTTP_PORT: 1111\nLOG_LEVEL: debug\n',
    );
    const file = tempFile('pg-maintd.yaml', 'DB_POOL_MAX: 12\nHTTP_PORT: 2222\nLOG_LEVEL: warn\n');
    const loaded = loadConfig({
      defaultsDir,
      configFile: file,
      env: { DATABASE_URL: URL_OK, HTTP_PORT: '3333', LOG_LEVEL: 'error' },
      flags: { LOG_LEVEL: 'fatal' },
    });
    const c = loaded.config;
    expect(c.db.pool.min).toBe(1); // config/default
    expect(c.db.pool.max).toBe(12); // config file over config/default
    expect(c.http.port).toBe(3333); // env over file
    expect(c.log.level).toBe('fatal'); // flag over env
    expect(c.db.pool.idleTimeoutMs).toBe(30000); // built-in
    expect(loaded.origins.DB_POOL_MIN).toEqual({
      kind: 'defaults-file',
      where: join(defaultsDir, 'default.yaml'),
    });
    expect(loaded.origins.DB_POOL_MAX).toEqual({ kind: 'file', where: file });
    expect(loaded.origins.LOG_LEVEL).toEqual({ kind: 'flag', where: '--log-level' });
  });

  it('reads the config file from --config over CONFIG_FILE, as YAML or JSON', () => {
    const json = tempFile('c.json', JSON.stringify({ HTTP_PORT: 4444 }));
    const yaml = tempFile('c.yaml', 'HTTP_PORT: 5555\n');
    expect(load({ env: { CONFIG_FILE: yaml } }).config.http.port).toBe(5555);
    expect(load({ env: { CONFIG_FILE: yaml }, configFile: json }).config.http.port).toBe(4444);
  });

  it('never prints the value of an unknown key (it may be a misspelt secret)', () => {
    const err = problemsOf(() =>
      load({
        configFile: tempFile(
          'typo.yaml',
          'DATABASE_UR: postgresql://u:typo-secret@h/db\nAWS_SECRET_ACCESS_KEY: aws-in-file\n',
        ),
      }),
    );
    expect(err.describe()).not.toMatch(/typo-secret|aws-in-file/);
    expect(err.describe()).toContain('did you mean DATABASE_URL?');
  });

  it('refuses a password in --verify-database-url too', () => {
    const err = problemsOf(() =>
      load({ flags: { VERIFY_DATABASE_URL: 'postgresql://v:verify-secret@h/db' } }),
    );
    expect(err.describe()).toMatch(
      /VERIFY_DATABASE_URL \(from flag --verify-database-url\).*no password on the command line/,
    );
    expect(err.describe()).not.toContain('verify-secret');
  });

  it('lets sslmode in DATABASE_URL win over the installation defaults (config/default.yaml)', () => {
    const loaded = loadConfig({ env: { DATABASE_URL: 'postgresql://app@db/app?sslmode=disable' } });
    expect(loaded.config.db.ssl.mode).toBe('disable');
  });

  it('reports a missing config file, a malformed one, and unknown keys with a suggestion', () => {
    expect(problemsOf(() => load({ configFile: '/nonexistent/pg-maintd.yaml' })).describe()).toMatch(
      /CONFIG_FILE.*no such file/,
    );
    expect(
      problemsOf(() => load({ configFile: tempFile('bad.yaml', 'HTTP_PORT: [1, 2\n') })).describe(),
    ).toMatch(/CONFIG_FILE.*readable YAML or JSON/);
    const err = problemsOf(() =>
      load({ configFile: tempFile('typo.yaml', 'db_pool_max: 5\nHTTP_PROT: 1\n') }),
    );
    expect(err.describe()).toContain('did you mean DB_POOL_MAX?');
    expect(err.problems.map((p) => p.field)).toEqual(['db_pool_max', 'HTTP_PROT']);
  });

  it('parses durations with units or as bare milliseconds', () => {
    const c = load({
      env: { DB_POOL_IDLE_TIMEOUT: '45s', DB_POOL_ACQUIRE_TIMEOUT: '1500', SHUTDOWN_GRACE_PERIOD: '1m' },
    }).config;
    expect(c.db.pool.idleTimeoutMs).toBe(45_000);
    expect(c.db.pool.acquireTimeoutMs).toBe(1500);
    expect(c.shutdown.graceMs).toBe(60_000);
  });

  it('reads per-collector intervals (off disables) and the metrics databases, from env or a file', () => {
    const fromEnv = load({
      env: {
        METRICS_COLLECTOR_INTERVALS: ' stat_statements=1m, locks = off ,',
        METRICS_DATABASES: 'app, billing',
      },
    }).config.metrics;
    expect(fromEnv.collectorIntervalsMs).toEqual({ stat_statements: 60_000, locks: 0 });
    expect(fromEnv.databases).toEqual(['app', 'billing']);
    const fromFile = load({
      configFile: tempFile(
        'c.yaml',
        'METRICS_COLLECTOR_INTERVALS:\n  stat_user_tables: 5m\n  database: "off"\nMETRICS_DATABASES: "*"\n',
      ),
    }).config.metrics;
    expect(fromFile.collectorIntervalsMs).toEqual({ stat_user_tables: 300_000, database: 0 });
    expect(fromFile.databases).toBe('*');
    const unset = load().config.metrics;
    expect(unset.collectorIntervalsMs).toEqual({});
    expect(unset.databases).toEqual(['app']); // the database of DATABASE_URL
    const bad = problemsOf(() => load({ env: { METRICS_COLLECTOR_INTERVALS: 'stat_statement=1m' } }));
    expect(bad.describe()).toContain('METRICS_COLLECTOR_INTERVALS');
    expect(bad.describe()).toContain('stat_statements');
  });

  it('uses sslmode from DATABASE_URL unless DB_SSL_MODE is set, and refuses a conflict', () => {
    const url = 'postgresql://app@db/app?sslmode=require';
    expect(loadConfig({ defaultsDir: noDefaults, env: { DATABASE_URL: url } }).config.db.ssl.mode).toBe(
      'require',
    );
    expect(
      loadConfig({ defaultsDir: noDefaults, env: { DATABASE_URL: url, DB_SSL_MODE: 'require' } }).config.db
        .ssl.mode,
    ).toBe('require');
    const err = problemsOf(() =>
      loadConfig({ defaultsDir: noDefaults, env: { DATABASE_URL: url, DB_SSL_MODE: 'disable' } }),
    );
    expect(err.describe()).toContain('DATABASE_URL says sslmode=require');
  });

  it('warns when TLS is not verified', () => {
    expect(load({ env: { DB_SSL_MODE: 'require' } }).warnings[0]).toMatch(/not verified/);
    expect(load({ env: { DB_SSL_REJECT_UNAUTHORIZED: 'false' } }).warnings[0]).toMatch(
      /turns off certificate verification/,
    );
    expect(load({ env: { DB_SSL_MODE: 'verify-full' } }).warnings).toEqual([]);
    expect(load({ env: { DB_SSL_MODE: 'disable' } }).warnings).toEqual([]);
  });

  it('warns when a drill role of its own meets plain dumps that keep their owners', () => {
    const env = { DB_SSL_MODE: 'disable', VERIFY_DATABASE_URL: 'postgresql://drill@db.internal/postgres' };
    expect(load({ env }).warnings).toEqual([expect.stringMatching(/every drill is inconclusive/)]);
    expect(load({ env: { ...env, BACKUP_FORMAT: 'custom' } }).warnings).toEqual([]);
    expect(load({ env: { ...env, BACKUP_OWNERSHIP: 'omit' } }).warnings).toEqual([]);
    expect(load({ env: { ...env, BACKUP_VERIFY_SCHEDULE: 'off' } }).warnings).toEqual([]);
    expect(load({ env: { DB_SSL_MODE: 'disable' } }).config.backup.ownership).toBe('keep');
  });

  it('hands out a deeply frozen configuration', () => {
    const { config } = load();
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.db.pool)).toBe(true);
    expect(() => {
      (config.db.pool as { max: number }).max = 1;
    }).toThrow(TypeError);
  });

  it('ships config/default.yaml with exactly the built-in defaults', () => {
    const shipped = parseYaml(readFileSync(join(PACKAGE_ROOT, 'config', 'default.yaml'), 'utf8')) as Record<
      string,
      unknown
    >;
    const builtIn = Object.fromEntries(
      FIELD_NAMES.filter((n) => (FIELDS[n] as FieldSpec).default !== undefined).map((n) => [
        n,
        (FIELDS[n] as FieldSpec).default,
      ]),
    );
    expect(shipped).toEqual(builtIn);
  });
});

describe('the age identity file', () => {
  it('readable by group or others is a warning naming the fix; 0600 is quiet', async () => {
    const { execFileSync } = await import('node:child_process');
    const { chmodSync } = await import('node:fs');
    const file = join(tempDir('cfg-age-'), 'key.txt');
    execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
    chmodSync(file, 0o644);
    const open = load({ env: { BACKUP_ENCRYPTION_IDENTITY_FILE: file } });
    expect(open.warnings.join('\n')).toMatch(/BACKUP_ENCRYPTION_IDENTITY_FILE .* group or others.*chmod 600/);
    // never the identity itself
    expect(open.warnings.join('\n')).not.toMatch(/AGE-SECRET-KEY/);
    chmodSync(file, 0o600);
    expect(load({ env: { BACKUP_ENCRYPTION_IDENTITY_FILE: file } }).warnings).toEqual([]);
  });
});
