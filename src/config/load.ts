/**
 * Loads configuration from its sources, validates it once, and returns a typed, frozen result.
 * Sources, highest priority first: CLI flags, environment, config file (--config / CONFIG_FILE),
 * config/default.{yaml,yml,json} of the installation, built-in defaults.
 */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { fileReadProblem, OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import {
  defaultS3Checksum,
  FIELDS,
  FIELD_NAMES,
  flagFor,
  type FieldName,
  type FieldSpec,
  type SslMode,
} from './fields.js';
import { parseDatabaseUrl } from '../core/database-url.js';
import { readUrlFile } from './database-url-file.js';
import { effectiveSslMode } from './ssl-mode.js';
import { describeUnknownVariable, suggestSetting, unknownEnvironment } from './env-names.js';
import { AGE_RECIPIENT, problemDetail, splitAgeRecipients } from './kinds.js';
import { maskValue, urlPassword } from '../core/mask.js';

export type SourceKind = 'flag' | 'env' | 'file' | 'defaults-file' | 'built-in';
export interface Origin {
  kind: SourceKind;
  /** Where exactly: the flag, the variable, or the file path. */
  where: string;
}

export interface Problem {
  field: string;
  origin?: Origin;
  given?: string;
  allowed: string;
}

export class ConfigError extends OperatorError {
  readonly problems: Problem[];
  constructor(problems: Problem[]) {
    super(`invalid configuration: ${problems.length} problem${problems.length === 1 ? '' : 's'}`, {
      exitCode: EXIT.CONFIG,
      hint: 'fix the settings above (flags, environment, or config file), then run `pg-maintd check-config`',
    });
    this.name = 'ConfigError';
    this.problems = problems;
  }

  override describe(): string {
    const lines = this.problems.map((p) => {
      const where = p.origin ? ` (from ${describeOrigin(p.origin)})` : '';
      const given = p.given === undefined ? 'not set' : `got ${JSON.stringify(p.given)}`;
      return `  - ${p.field}${where}: ${given}; expected ${p.allowed}`;
    });
    return [`pg-maintd: ${this.message}:`, ...lines, `  fix: ${this.hint}`].join('\n');
  }
}

export function describeOrigin(o: Origin): string {
  switch (o.kind) {
    case 'flag':
      return `flag ${o.where}`;
    case 'env':
      return `environment ${o.where}`;
    case 'file':
    case 'defaults-file':
      return `file ${o.where}`;
    default:
      return 'built-in default';
  }
}

export interface LoadInput {
  /** Values from CLI flags, keyed by field name (DB_POOL_MAX), as strings. */
  flags?: Partial<Record<FieldName, string>>;
  /** Path from --config, which wins over CONFIG_FILE. */
  configFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Folder holding default.{yaml,yml,json}; defaults to the installation's config/. */
  defaultsDir?: string;
  /**
   * For commands that never connect (wal-push and wal-fetch, which PostgreSQL runs with its own
   * environment): DATABASE_URL may be unset, and then stands for a local server it is never used for.
   */
  databaseOptional?: boolean;
}

export type Config = ReturnType<typeof shape>;

export interface LoadedConfig {
  config: Config;
  /** Raw effective values (before parsing), for check-config. */
  raw: Record<FieldName, unknown>;
  origins: Record<FieldName, Origin>;
  /** Things worth a warning once the logger exists (for example TLS verification turned off). */
  warnings: string[];
  /** Choices made for the operator, logged once at start (info) and shown by check-config. */
  notices: string[];
  /** Secret values (passwords) that must never be printed, for the log scrubber. */
  secrets: string[];
}

export const PACKAGE_ROOT = resolve(import.meta.dirname, '..', '..');

export function loadConfig(input: LoadInput = {}): LoadedConfig {
  const env = input.env ?? process.env;
  const problems: Problem[] = [];
  const raw = {} as Record<FieldName, unknown>;
  const origins = {} as Record<FieldName, Origin>;
  const set = (name: FieldName, value: unknown, origin: Origin) => {
    raw[name] = value;
    origins[name] = origin;
  };

  for (const name of FIELD_NAMES) {
    const spec: FieldSpec = FIELDS[name];
    if (spec.default !== undefined) set(name, spec.default, { kind: 'built-in', where: '' });
  }

  const defaultsFile = findDefaultsFile(input.defaultsDir ?? join(PACKAGE_ROOT, 'config'));
  if (defaultsFile) readFileSource(defaultsFile, 'defaults-file', set, problems);

  const configFile = input.configFile ?? nonEmpty(env.CONFIG_FILE);
  if (configFile) readFileSource(resolve(configFile), 'file', set, problems);

  for (const name of FIELD_NAMES) {
    const v = nonEmpty(env[name]);
    if (v !== undefined) set(name, v, { kind: 'env', where: name });
  }
  for (const [name, v] of Object.entries(input.flags ?? {})) {
    if (v !== undefined) set(name as FieldName, v, { kind: 'flag', where: flagFor(name) });
  }

  readDatabaseUrlFile(raw, origins, problems);
  if (input.databaseOptional && raw.DATABASE_URL === undefined && raw.DATABASE_URL_FILE === undefined)
    set('DATABASE_URL', 'postgresql://localhost/postgres', { kind: 'built-in', where: '' });
  applyUrlSslMode(raw, origins, problems);

  const parsed = {} as Record<FieldName, unknown>;
  for (const name of FIELD_NAMES) {
    const spec: FieldSpec = FIELDS[name];
    const origin = origins[name];
    if (raw[name] === undefined) {
      // DATABASE_URL_FILE given but unusable: its own problem says why; "DATABASE_URL: not set" would mislead
      const fromFile = name === 'DATABASE_URL' && raw.DATABASE_URL_FILE !== undefined;
      if (spec.required && !fromFile) problems.push({ field: name, allowed: spec.allowed });
      continue;
    }
    const result = spec.schema.safeParse(raw[name]);
    if (result.success) parsed[name] = result.data;
    else {
      // a detail may quote the value, so never for a secret
      const detail = spec.secret ? undefined : problemDetail(result.error);
      problems.push({
        field: name,
        origin,
        given: maskValue(raw[name], spec.secret ?? false),
        allowed: detail ? `${spec.allowed} (${detail})` : spec.allowed,
      });
    }
  }

  for (const field of ['DATABASE_URL', 'VERIFY_DATABASE_URL'] as const) {
    if (origins[field]?.kind === 'flag' && urlPassword(String(raw[field]))) {
      problems.push({
        field,
        origin: origins[field],
        given: maskValue(raw[field], 'url'),
        allowed:
          'no password on the command line (every local user can read process arguments); put it in PGPASSWORD, a passfile, the environment, or the config file',
      });
    }
  }
  crossChecks(parsed as Partial<Parsed>, origins, problems);
  if (problems.length > 0) throw new ConfigError(withOrigins(problems, origins));

  // the installation's defaults file may change the mode (a packager's `require`): then it is set
  const sslModeDefaulted =
    !isExplicit(origins.DB_SSL_MODE) &&
    !(origins.DB_SSL_MODE?.kind === 'defaults-file' && parsed.DB_SSL_MODE !== FIELDS.DB_SSL_MODE.default);
  const config = deepFreeze(shape(parsed as Parsed, sslModeDefaulted));
  const secrets = [
    urlPassword(config.db.url),
    config.verify.url ? urlPassword(config.verify.url) : undefined,
    nonEmpty(env.PGPASSWORD),
    nonEmpty(env.AWS_SECRET_ACCESS_KEY),
    nonEmpty(env.AWS_SESSION_TOKEN),
  ].filter((s): s is string => !!s);
  const warnings = [...warningsFor(config), ...unknownEnvironment(env).map(describeUnknownVariable)];
  return { config, raw, origins, warnings, notices: noticesFor(config), secrets };
}

/** The web files as absolute paths (the HTTP server re-reads them from wherever it runs). */
function webFiles(p: Parsed) {
  return {
    configFile: p.WEB_CONFIG_FILE === undefined ? undefined : resolve(p.WEB_CONFIG_FILE),
    bearerTokenFile: p.WEB_BEARER_TOKEN_FILE === undefined ? undefined : resolve(p.WEB_BEARER_TOKEN_FILE),
  };
}

type Parsed = { [K in FieldName]: z.output<(typeof FIELDS)[K]['schema']> };

/** The typed shape handed to the rest of the code. */
function shape(p: Parsed, sslModeDefaulted = false) {
  return {
    db: {
      url: p.DATABASE_URL as string,
      urlFile: p.DATABASE_URL_FILE ? resolve(p.DATABASE_URL_FILE) : undefined,
      pool: {
        min: p.DB_POOL_MIN,
        max: p.DB_POOL_MAX,
        idleTimeoutMs: p.DB_POOL_IDLE_TIMEOUT,
        acquireTimeoutMs: p.DB_POOL_ACQUIRE_TIMEOUT,
      },
      ssl: {
        mode: p.DB_SSL_MODE as SslMode,
        rejectUnauthorized: p.DB_SSL_REJECT_UNAUTHORIZED,
        rootCertFile: p.DB_SSL_ROOT_CERT,
        certFile: p.DB_SSL_CERT,
        keyFile: p.DB_SSL_KEY,
        modeDefaulted: sslModeDefaulted,
      },
    },
    http: {
      host: p.HTTP_HOST,
      port: p.HTTP_PORT,
      readyzIntervalMs: p.READYZ_INTERVAL,
      readyzTimeoutMs: p.READYZ_TIMEOUT,
      livenessMaxLagMs: p.LIVENESS_MAX_LAG,
      // Paths only: check-config shows them, never the contents. The preflight checks the files; the
      // HTTP server reads them itself, and again when they change.
      web: webFiles(p),
    },
    backup: {
      schedule: p.BACKUP_SCHEDULE,
      timezone: p.SCHEDULE_TZ,
      databases: p.BACKUP_DATABASES ?? [parseDatabaseUrl(p.DATABASE_URL as string).database],
      format: p.BACKUP_FORMAT,
      ownership: p.BACKUP_OWNERSHIP,
      compressionLevel: p.BACKUP_COMPRESSION_LEVEL,
      compressionThreads: p.BACKUP_COMPRESSION_THREADS || availableParallelism(),
      dir: p.BACKUP_DIR,
      timeoutMs: p.BACKUP_TIMEOUT,
      rowCountMaxTableBytes: p.BACKUP_ROW_COUNT_MAX_TABLE_SIZE,
      lockWaitTimeoutMs: p.BACKUP_LOCK_WAIT_TIMEOUT,
      from: p.BACKUP_FROM,
      maxStandbyLagMs: p.BACKUP_MAX_STANDBY_LAG,
      clientBinDir: p.PG_CLIENT_BIN_DIR,
      // the path only: the keys are read where the catalog is built, and never kept in the config
      signingKeyFile: p.BACKUP_SIGNING_KEY_FILE ? resolve(p.BACKUP_SIGNING_KEY_FILE) : undefined,
      clockSkewToleranceMs: p.CLOCK_SKEW_TOLERANCE,
      spoolDir: p.RESTORE_SPOOL_DIR ? resolve(p.RESTORE_SPOOL_DIR) : undefined,
      encryption: {
        // public keys only; the identity file's path, never its content
        recipients: p.BACKUP_ENCRYPTION_RECIPIENTS,
        recipientsFile: p.BACKUP_ENCRYPTION_RECIPIENTS_FILE
          ? resolve(p.BACKUP_ENCRYPTION_RECIPIENTS_FILE)
          : undefined,
        identityFile: p.BACKUP_ENCRYPTION_IDENTITY_FILE
          ? resolve(p.BACKUP_ENCRYPTION_IDENTITY_FILE)
          : undefined,
      },
      globals: { enabled: p.BACKUP_GLOBALS, passwords: p.BACKUP_GLOBALS_PASSWORDS },
    },
    s3: {
      bucket: p.S3_BUCKET,
      prefix: p.S3_PREFIX,
      region: p.S3_REGION,
      endpoint: p.S3_ENDPOINT,
      forcePathStyle: p.S3_FORCE_PATH_STYLE,
      checksum: p.S3_CHECKSUM ?? defaultS3Checksum(p.S3_ENDPOINT),
      sse: p.S3_SSE,
      kmsKeyId: p.S3_SSE_KMS_KEY_ID,
      storageClass: p.S3_STORAGE_CLASS,
      partSize: p.S3_PART_SIZE,
      maxAttempts: p.S3_MAX_ATTEMPTS,
      requestTimeoutMs: p.S3_REQUEST_TIMEOUT,
      objectLock: {
        mode: p.S3_OBJECT_LOCK,
        days:
          p.S3_OBJECT_LOCK_DAYS ??
          Math.max(p.BACKUP_RETENTION_DAYS, p.WAL_ARCHIVE === 'off' ? 0 : p.PITR_RETENTION_DAYS),
      },
    },
    retention: {
      days: p.BACKUP_RETENTION_DAYS,
      minCount: p.BACKUP_RETENTION_MIN_COUNT,
      keepDaily: p.BACKUP_KEEP_DAILY,
      keepWeekly: p.BACKUP_KEEP_WEEKLY,
      keepMonthly: p.BACKUP_KEEP_MONTHLY,
      incompleteGraceMs: p.BACKUP_INCOMPLETE_GRACE,
    },
    verify: { schedule: p.BACKUP_VERIFY_SCHEDULE, url: p.VERIFY_DATABASE_URL },
    leases: { ttlMs: p.LEASE_TTL },
    pitr: {
      archive: p.WAL_ARCHIVE,
      slot: p.WAL_SLOT,
      spoolDir: resolve(p.WAL_SPOOL_DIR),
      partialUploadIntervalMs: p.WAL_PARTIAL_UPLOAD_INTERVAL,
      basebackupSchedule: p.BASEBACKUP_SCHEDULE,
      retentionDays: p.PITR_RETENTION_DAYS,
      drillSchedule: p.PITR_DRILL_SCHEDULE,
      heartbeatIntervalMs: p.PITR_HEARTBEAT_INTERVAL,
      serverBinDir: p.PG_SERVER_BIN_DIR ? resolve(p.PG_SERVER_BIN_DIR) : undefined,
    },
    metrics: {
      intervalMs: p.METRICS_INTERVAL,
      statementTimeoutMs: p.METRICS_STATEMENT_TIMEOUT,
      lockTimeoutMs: p.METRICS_LOCK_TIMEOUT,
      databaseSizeIntervalMs: p.METRICS_DATABASE_SIZE_INTERVAL,
      collectorIntervalsMs: p.METRICS_COLLECTOR_INTERVALS ?? {},
      databases: p.METRICS_DATABASES ?? [parseDatabaseUrl(p.DATABASE_URL as string).database],
      maxConnections: p.METRICS_MAX_CONNECTIONS,
      lockWaitLogAfterMs: p.METRICS_LOCK_WAIT_LOG_AFTER,
      tablesLimit: p.METRICS_TABLES_LIMIT,
      statementsLimit: p.METRICS_STATEMENTS_LIMIT,
      queryText: p.METRICS_QUERY_TEXT,
      queryTextLength: p.METRICS_QUERY_TEXT_LENGTH,
    },
    migrations: {
      onStart: p.MIGRATE_ON_START,
      dir: p.MIGRATIONS_DIR ?? join(PACKAGE_ROOT, 'migrations'),
      lockWaitMs: p.MIGRATE_LOCK_WAIT,
      lockTimeoutMs: p.MIGRATE_LOCK_TIMEOUT,
    },
    maintenance: {
      schedule: p.MAINTENANCE_SCHEDULE,
      databases: p.MAINTENANCE_DATABASES ?? [parseDatabaseUrl(p.DATABASE_URL as string).database],
      vacuumDeadRatio: p.MAINTENANCE_VACUUM_DEAD_RATIO,
      vacuumMinDeadTuples: p.MAINTENANCE_VACUUM_MIN_DEAD_TUPLES,
      vacuumStaleAfterMs: p.MAINTENANCE_VACUUM_STALE_AFTER,
      analyzeStaleAfterMs: p.MAINTENANCE_ANALYZE_STALE_AFTER,
      reindexBloatRatio: p.MAINTENANCE_REINDEX_BLOAT_RATIO,
      reindexMinSizeBytes: p.MAINTENANCE_REINDEX_MIN_SIZE,
      lockTimeoutMs: p.MAINTENANCE_LOCK_TIMEOUT,
      statementTimeoutMs: p.MAINTENANCE_STATEMENT_TIMEOUT,
    },
    log: { level: p.LOG_LEVEL, format: p.LOG_FORMAT },
    shutdown: { graceMs: p.SHUTDOWN_GRACE_PERIOD },
  };
}

function warningsFor(config: Config): string[] {
  const w: string[] = [];
  if (!config.s3.bucket && (config.s3.endpoint || config.s3.sse || config.s3.storageClass)) {
    w.push('S3 settings are given but S3_BUCKET is not: backups go to the local BACKUP_DIR');
  }
  const { mode, rejectUnauthorized, rootCertFile } = config.db.ssl;
  if (mode === 'allow' || mode === 'prefer' || (mode === 'require' && !rootCertFile)) {
    w.push(
      `DB_SSL_MODE=${mode}: the database server's certificate is not verified, so a man in the middle can read the connection; use verify-full with DB_SSL_ROOT_CERT`,
    );
  }
  if ((mode === 'verify-ca' || mode === 'verify-full') && !rejectUnauthorized) {
    w.push(
      `DB_SSL_REJECT_UNAUTHORIZED=false turns off certificate verification for DB_SSL_MODE=${mode}; the connection is encrypted but not authenticated`,
    );
  }
  if (
    config.verify.url &&
    config.verify.schedule !== 'off' &&
    config.backup.format === 'plain' &&
    config.backup.ownership === 'keep'
  ) {
    w.push(
      'drills restore as the role of VERIFY_DATABASE_URL, and plain dumps keep their owners (BACKUP_FORMAT=plain, BACKUP_OWNERSHIP=keep): unless that role is a superuser there, it cannot give the objects to their owners and every drill is inconclusive; set BACKUP_FORMAT=custom (drills restore it without owners) or BACKUP_OWNERSHIP=omit',
    );
  }
  return w;
}

function noticesFor(config: Config): string[] {
  const n: string[] = [];
  const host = parseDatabaseUrl(config.db.url).host;
  if (effectiveSslMode(config.db.ssl, host) !== config.db.ssl.mode)
    n.push(
      `DB_SSL_MODE is not set and the database is on this machine (${host}): TLS is used when the server offers it, plaintext otherwise (prefer, libpq's default); set DB_SSL_MODE=verify-full or require to insist on TLS`,
    );
  return n;
}

/** Set by the operator (flag, environment, config file, or sslmode in the URL), not a default. */
function isExplicit(origin: Origin | undefined): boolean {
  return origin !== undefined && origin.kind !== 'built-in' && origin.kind !== 'defaults-file';
}

function crossChecks(p: Partial<Parsed>, origins: Record<FieldName, Origin>, problems: Problem[]) {
  if (p.DB_POOL_MIN !== undefined && p.DB_POOL_MAX !== undefined && p.DB_POOL_MIN > p.DB_POOL_MAX) {
    problems.push({
      field: 'DB_POOL_MIN',
      origin: origins.DB_POOL_MIN,
      given: String(p.DB_POOL_MIN),
      allowed: `at most DB_POOL_MAX (${p.DB_POOL_MAX})`,
    });
  }
  if ((p.DB_SSL_CERT === undefined) !== (p.DB_SSL_KEY === undefined)) {
    const field = p.DB_SSL_CERT === undefined ? 'DB_SSL_CERT' : 'DB_SSL_KEY';
    problems.push({ field, allowed: FIELDS[field].allowed });
  }
  if (p.S3_SSE_KMS_KEY_ID !== undefined && p.S3_SSE !== 'aws:kms') {
    problems.push({
      field: 'S3_SSE_KMS_KEY_ID',
      origin: origins.S3_SSE_KMS_KEY_ID,
      given: p.S3_SSE_KMS_KEY_ID,
      allowed: 'only together with S3_SSE=aws:kms',
    });
  }
  if (p.S3_OBJECT_LOCK !== undefined && p.S3_OBJECT_LOCK !== 'off' && p.S3_BUCKET === undefined) {
    problems.push({
      field: 'S3_OBJECT_LOCK',
      origin: origins.S3_OBJECT_LOCK,
      given: p.S3_OBJECT_LOCK,
      allowed:
        'off without S3_BUCKET (a directory store is made immutable by its file system, not by pg-maintd)',
    });
  }
  if (p.S3_OBJECT_LOCK_DAYS !== undefined) {
    const retention = [
      ['BACKUP_RETENTION_DAYS', p.BACKUP_RETENTION_DAYS] as const,
      ...(p.WAL_ARCHIVE !== undefined && p.WAL_ARCHIVE !== 'off'
        ? [['PITR_RETENTION_DAYS', p.PITR_RETENTION_DAYS] as const]
        : []),
    ].filter(([, days]) => days !== undefined && p.S3_OBJECT_LOCK_DAYS! < days);
    for (const [field, days] of retention)
      problems.push({
        field: 'S3_OBJECT_LOCK_DAYS',
        origin: origins.S3_OBJECT_LOCK_DAYS,
        given: String(p.S3_OBJECT_LOCK_DAYS),
        allowed: `at least ${field} (${days}): an object retention keeps must stay locked`,
      });
  }
  for (const field of ['BACKUP_ENCRYPTION_RECIPIENTS_FILE', 'BACKUP_ENCRYPTION_IDENTITY_FILE'] as const) {
    const path = p[field];
    if (path !== undefined && !existsSync(path))
      problems.push({ field, origin: origins[field], given: path, allowed: FIELDS[field].allowed });
  }
  const recipientsFile = p.BACKUP_ENCRYPTION_RECIPIENTS_FILE;
  if (recipientsFile !== undefined && existsSync(recipientsFile)) {
    const why = recipientsFileProblem(recipientsFile);
    if (why)
      problems.push({
        field: 'BACKUP_ENCRYPTION_RECIPIENTS_FILE',
        origin: origins.BACKUP_ENCRYPTION_RECIPIENTS_FILE,
        given: recipientsFile,
        allowed: `${FIELDS.BACKUP_ENCRYPTION_RECIPIENTS_FILE.allowed} (${why})`,
      });
  }
  if (p.MIGRATIONS_DIR !== undefined && !existsSync(p.MIGRATIONS_DIR)) {
    problems.push({
      field: 'MIGRATIONS_DIR',
      origin: origins.MIGRATIONS_DIR,
      given: p.MIGRATIONS_DIR,
      allowed: 'an existing directory of NNNN_name.sql files',
    });
  }
  if (p.RESTORE_SPOOL_DIR !== undefined && !existsSync(p.RESTORE_SPOOL_DIR)) {
    problems.push({
      field: 'RESTORE_SPOOL_DIR',
      origin: origins.RESTORE_SPOOL_DIR,
      given: p.RESTORE_SPOOL_DIR,
      allowed: 'an existing directory',
    });
  }
  if (p.PG_SERVER_BIN_DIR !== undefined && !existsSync(p.PG_SERVER_BIN_DIR)) {
    problems.push({
      field: 'PG_SERVER_BIN_DIR',
      origin: origins.PG_SERVER_BIN_DIR,
      given: p.PG_SERVER_BIN_DIR,
      allowed: 'an existing directory holding postgres and pg_ctl',
    });
  }
  if (p.PG_CLIENT_BIN_DIR !== undefined && !existsSync(p.PG_CLIENT_BIN_DIR)) {
    problems.push({
      field: 'PG_CLIENT_BIN_DIR',
      origin: origins.PG_CLIENT_BIN_DIR,
      given: p.PG_CLIENT_BIN_DIR,
      allowed: 'an existing directory holding pg_dump, pg_restore and psql',
    });
  }
  for (const field of ['DB_SSL_ROOT_CERT', 'DB_SSL_CERT', 'DB_SSL_KEY'] as const) {
    const path = p[field];
    if (path !== undefined && !existsSync(path)) {
      problems.push({
        field,
        origin: origins[field],
        given: path,
        allowed: `${FIELDS[field].allowed} (no such file)`,
      });
    }
  }
}

/** DATABASE_URL_FILE fills DATABASE_URL from the file (checked like DATABASE_URL itself). */
function readDatabaseUrlFile(
  raw: Record<FieldName, unknown>,
  origins: Record<FieldName, Origin>,
  problems: Problem[],
) {
  const file = typeof raw.DATABASE_URL_FILE === 'string' ? raw.DATABASE_URL_FILE.trim() : '';
  if (!file) return;
  if (raw.DATABASE_URL !== undefined) {
    problems.push({
      field: 'DATABASE_URL_FILE',
      origin: origins.DATABASE_URL_FILE,
      given: file,
      allowed: `one source of the URL: DATABASE_URL is set too (from ${describeOrigin(origins.DATABASE_URL)}); remove one of the two`,
    });
    return;
  }
  try {
    raw.DATABASE_URL = readUrlFile(resolve(file));
    origins.DATABASE_URL = { kind: 'file', where: resolve(file) };
  } catch (err) {
    problems.push({
      field: 'DATABASE_URL_FILE',
      origin: origins.DATABASE_URL_FILE,
      given: file,
      allowed: `${FIELDS.DATABASE_URL_FILE.allowed} (${errorMessage(err)})`,
    });
  }
}

/** A sslmode in DATABASE_URL stands in for DB_SSL_MODE when that is not set explicitly. */
function applyUrlSslMode(
  raw: Record<FieldName, unknown>,
  origins: Record<FieldName, Origin>,
  problems: Problem[],
) {
  if (typeof raw.DATABASE_URL !== 'string') return;
  let urlMode: string | null;
  try {
    urlMode = new URL(raw.DATABASE_URL).searchParams.get('sslmode');
  } catch {
    return; // reported by the URL check
  }
  if (!urlMode) return;
  // Defaults (built in or the installation's config/default.yaml) yield to the URL; an operator's
  // own DB_SSL_MODE that disagrees with it is a conflict.
  if (!isExplicit(origins.DB_SSL_MODE)) {
    raw.DB_SSL_MODE = urlMode;
    origins.DB_SSL_MODE = origins.DATABASE_URL;
  } else if (raw.DB_SSL_MODE !== urlMode) {
    problems.push({
      field: 'DB_SSL_MODE',
      origin: origins.DB_SSL_MODE,
      given: String(raw.DB_SSL_MODE),
      allowed: `one TLS mode: DATABASE_URL says sslmode=${urlMode}; remove one of the two`,
    });
  }
}

function readFileSource(
  path: string,
  kind: 'file' | 'defaults-file',
  set: (name: FieldName, value: unknown, origin: Origin) => void,
  problems: Problem[],
) {
  const field = kind === 'file' ? 'CONFIG_FILE' : 'config/default';
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    problems.push({ field, given: path, allowed: `a readable YAML or JSON file (${fileReadProblem(err)})` });
    return;
  }
  if (doc === null || doc === undefined) return;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    problems.push({ field, given: path, allowed: 'a YAML or JSON mapping of setting names to values' });
    return;
  }
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    if (!(key in FIELDS)) {
      const near = suggestSetting(key);
      problems.push({
        field: key,
        origin: { kind, where: path },
        given: '(value not shown: an unknown key may hold a secret)',
        allowed: `a known setting${near ? ` (did you mean ${near}?)` : ''}; see the README's configuration table`,
      });
      continue;
    }
    if (value !== null && value !== undefined) set(key as FieldName, value, { kind, where: path });
  }
}

/** Every problem names where its setting came from, when it was set at all. */
export function withOrigins(problems: Problem[], origins: Record<FieldName, Origin>): Problem[] {
  return problems.map((p) =>
    p.origin || p.given === undefined || !(p.field in origins)
      ? p
      : { ...p, origin: origins[p.field as FieldName] },
  );
}

function findDefaultsFile(dir: string): string | undefined {
  return ['default.yaml', 'default.yml', 'default.json'].map((f) => join(dir, f)).find((f) => existsSync(f));
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v;
}

function deepFreeze<T>(o: T): Readonly<T> {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Why a recipients file cannot be used, quoting no line of it (a secret key may sit there by mistake). */
export function recipientsFileProblem(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return `cannot read it: ${(err as NodeJS.ErrnoException).code ?? 'error'}`;
  }
  return recipientsTextProblem(text);
}

/** What is wrong with a recipients file's text, or undefined. */
export function recipientsTextProblem(text: string): string | undefined {
  const list = splitAgeRecipients(text);
  if (list.length === 0) return 'it holds no recipient';
  const bad = list.findIndex((r) => !AGE_RECIPIENT.test(r));
  if (bad < 0) return undefined;
  return /^AGE-SECRET-KEY-/i.test(list[bad]!)
    ? `item ${bad + 1} is a secret key: give its public key (age-keygen -y)`
    : `item ${bad + 1} is not an age public key (age1...)`;
}
