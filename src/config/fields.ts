/**
 * The one configuration schema. Every setting is declared here once: its environment name (which is
 * also its key in a config file), its kind, its default, what it means and what is allowed.
 * The README's configuration table is generated from this list (`npm run docs:config`) and a test
 * keeps the two identical.
 */
import { z } from 'zod';
import {
  ageRecipients,
  bool,
  cronOrOff,
  databaseList,
  duration,
  host,
  int,
  intervalMap,
  oneOf,
  ratio,
  optionalText,
  size,
  text,
  timezone,
  url,
} from './kinds.js';

export interface FieldSpec {
  schema: z.ZodType;
  /** Default as it would be written in a config file; undefined means required or optional-unset. */
  default?: string | number | boolean;
  required?: boolean;
  /** What the setting means (README, check-config). */
  doc: string;
  /** What is allowed (error messages). */
  allowed: string;
  /** true: masked whole; 'url': only the password inside the URL is masked. */
  secret?: boolean | 'url';
  group:
    | 'Database'
    | 'HTTP'
    | 'Logging'
    | 'Lifecycle'
    | 'Backups'
    | 'S3'
    | 'Retention'
    | 'Verification'
    | 'PITR'
    | 'Metrics'
    | 'Migrations'
    | 'Maintenance';
}

const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
const S3_STORAGE_CLASSES = [
  'STANDARD',
  'STANDARD_IA',
  'ONEZONE_IA',
  'INTELLIGENT_TIERING',
  'GLACIER_IR',
  'GLACIER',
  'DEEP_ARCHIVE',
  'REDUCED_REDUNDANCY',
] as const;
/**
 * The metrics collectors, by the `collector` label postgres_exporter gives them (stat_database_conflicts,
 * which the reference reads on its legacy query path under no collector name, has one of its own).
 */
export const METRICS_COLLECTORS = [
  'postmaster',
  'stat_activity',
  'locks',
  'database',
  'stat_database',
  'stat_database_conflicts',
  'settings',
  'stat_bgwriter',
  'stat_user_tables',
  'statio_user_tables',
  'stat_user_indexes',
  'stat_progress_vacuum',
  'stat_archiver',
  'replication',
  'replication_slots',
  'stat_replication',
  'wal',
  'roles',
  'stat_statements',
  'database_wraparound',
  'bloat',
  'invalid_indexes',
  'wait_events',
  'stat_io',
  'stat_checkpointer',
  'stat_wal',
] as const;
export type CollectorName = (typeof METRICS_COLLECTORS)[number];
/** Collectors that run only when METRICS_COLLECTOR_INTERVALS gives them an interval (off in the reference too). */
export const COLLECTORS_OFF_BY_DEFAULT: readonly CollectorName[] = ['stat_user_indexes'];
/** Former collector names still accepted in METRICS_COLLECTOR_INTERVALS, for configurations written before. */
export const COLLECTOR_ALIASES: Readonly<Record<string, CollectorName>> = { bgwriter: 'stat_bgwriter' };
/**
 * When the AWS SDK adds integrity checksums (CRC32) to requests and checks those of answers: on every
 * upload where S3 supports them (the SDK's default since 3.729), or only where an operation requires
 * one (DeleteObjects). Several S3-compatible stores refuse the checksum headers of the former.
 */
const S3_CHECKSUM_MODES = ['when_supported', 'when_required'] as const;
export type S3ChecksumMode = (typeof S3_CHECKSUM_MODES)[number];

/** S3_CHECKSUM when unset: AWS gets the SDK's default; a store at a custom S3_ENDPOINT the safe one. */
export function defaultS3Checksum(endpoint: string | undefined): S3ChecksumMode {
  return endpoint ? 'when_required' : 'when_supported';
}
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** The longest LEASE_TTL: a lease that expires later than this from now is void (db/lease.ts). */
export const LEASE_TTL_MAX_MS = 3_600_000;

const ms = (lo: number, hi: number, what: string) =>
  `a duration from ${lo} ms to ${what} (e.g. "30s", "5m", or bare milliseconds)`;

export const FIELDS = {
  DATABASE_URL: {
    schema: url(['postgres:', 'postgresql:']),
    required: true,
    doc: 'Connection URL of the database pg-maintd looks after. Prefer PGPASSWORD or a passfile to a password in the URL.',
    allowed:
      'a postgres:// or postgresql:// URL, e.g. postgresql://pgmaintd@db.internal:5432/app (or DATABASE_URL_FILE)',
    secret: 'url',
    group: 'Database',
  },
  DATABASE_URL_FILE: {
    schema: optionalText(),
    doc: 'A file holding the connection URL, instead of DATABASE_URL (a mounted Kubernetes Secret, or a file your failover tooling rewrites). Checked at most once a second and re-read when it changes: a failover to another host or port, or a rotated password, applies to new connections without a restart. A file that turns invalid keeps the last good URL and logs an error. TLS settings are read once, at start.',
    allowed: 'a path to a readable file holding one postgres:// URL',
    group: 'Database',
  },
  DB_POOL_MIN: {
    schema: int(0, 1000),
    default: 2,
    doc: 'Connections the pool keeps open when idle.',
    allowed: 'an integer from 0 to 1000, not above DB_POOL_MAX',
    group: 'Database',
  },
  DB_POOL_MAX: {
    schema: int(1, 1000),
    default: 20,
    doc: 'Most connections the pool opens.',
    allowed: 'an integer from 1 to 1000',
    group: 'Database',
  },
  DB_POOL_IDLE_TIMEOUT: {
    schema: duration(0, 86_400_000),
    default: 30000,
    doc: 'Idle time after which a pooled connection above DB_POOL_MIN is closed (ms).',
    allowed: ms(0, 86_400_000, '1 day'),
    group: 'Database',
  },
  DB_POOL_ACQUIRE_TIMEOUT: {
    schema: duration(1, 3_600_000),
    default: 60000,
    doc: 'Longest wait for a pooled connection, including connecting (ms).',
    allowed: ms(1, 3_600_000, '1 hour'),
    group: 'Database',
  },
  DB_SSL_MODE: {
    schema: oneOf(SSL_MODES),
    default: 'verify-full',
    doc: 'TLS to the database, with libpq meanings. disable/allow/prefer/require do not verify the server and log a warning when TLS could be in use; verify-ca checks the chain, verify-full also the host name. A `sslmode` in DATABASE_URL is used when this is not set. When neither is set, a database on this machine (localhost, 127.0.0.1, ::1, a Unix socket) gets prefer, as libpq defaults to, said once at start; any other host gets verify-full.',
    allowed: SSL_MODES.join(' | '),
    group: 'Database',
  },
  DB_SSL_REJECT_UNAUTHORIZED: {
    schema: bool(),
    default: true,
    doc: 'Set false to skip certificate verification in verify-ca/verify-full (logged as a warning). Never needed with a correct DB_SSL_ROOT_CERT.',
    allowed: 'true or false',
    group: 'Database',
  },
  DB_SSL_ROOT_CERT: {
    schema: optionalText(),
    doc: 'PEM file of the CA(s) that signed the server certificate (libpq sslrootcert). Unset: the system CA store.',
    allowed: 'a path to a readable PEM file',
    group: 'Database',
  },
  DB_SSL_CERT: {
    schema: optionalText(),
    doc: 'Client certificate PEM file (libpq sslcert), for certificate authentication.',
    allowed: 'a path to a readable PEM file, set together with DB_SSL_KEY',
    group: 'Database',
  },
  DB_SSL_KEY: {
    schema: optionalText(),
    doc: 'Client private key PEM file (libpq sslkey).',
    allowed: 'a path to a readable PEM file, set together with DB_SSL_CERT',
    group: 'Database',
  },
  BACKUP_SCHEDULE: {
    schema: cronOrOff(),
    default: '0 2 * * *',
    doc: 'When scheduled backups run (cron, 5 fields or 6 with seconds), in SCHEDULE_TZ. `off` disables them.',
    allowed: 'a cron expression such as "0 2 * * *", or off',
    group: 'Backups',
  },
  SCHEDULE_TZ: {
    schema: timezone(),
    default: 'UTC',
    doc: 'Time zone of the cron schedules, which run in its wall-clock time: on a daylight-saving change a slot in the skipped hour runs once right after the jump, and one in the repeated hour runs once, the first time.',
    allowed: 'an IANA time zone such as UTC or Europe/Berlin',
    group: 'Backups',
  },
  LEASE_TTL: {
    schema: duration(2000, LEASE_TTL_MAX_MS),
    default: '1m',
    doc: 'Lifetime of the lease (a row in pgmaintd.leases, in the database of DATABASE_URL) that elects the one replica running each backup, drill or maintenance run; renewed every third of it. A replica that cannot renew it within this time stops the run (a backup fails with reason lease_lost), and another may take over after it.',
    allowed: ms(2000, LEASE_TTL_MAX_MS, '1 hour'),
    group: 'Backups',
  },
  BACKUP_DATABASES: {
    schema: databaseList(),
    doc: 'Comma-separated databases to back up (in a config file also a list, for names holding commas). Any name PostgreSQL allows works: its folder in the store is percent-encoded. Unset: the database of DATABASE_URL.',
    allowed: 'distinct database names of 1 to 63 bytes separated by commas, e.g. app,billing',
    group: 'Backups',
  },
  BACKUP_FORMAT: {
    schema: oneOf(['plain', 'custom'] as const),
    default: 'plain',
    doc: 'plain: SQL script (restored with psql); custom: pg_dump -Fc archive (restored with pg_restore).',
    allowed: 'plain | custom',
    group: 'Backups',
  },
  BACKUP_OWNERSHIP: {
    schema: oneOf(['keep', 'omit'] as const),
    default: 'keep',
    doc: "keep: dumps hold each object's owner and its GRANTs (`ALTER ... OWNER TO`, `GRANT`), and a restore puts them back; the roles they name come from the cluster's globals (`restore --globals`). omit: dumps are taken with `--no-owner --no-privileges`, and a restore makes the restoring role the owner of everything. Drills restore custom-format dumps without owners either way.",
    allowed: 'keep | omit',
    group: 'Backups',
  },
  BACKUP_COMPRESSION_LEVEL: {
    schema: int(1, 9),
    default: 6,
    doc: 'gzip level of the backup stream.',
    allowed: 'an integer from 1 (fastest) to 9 (smallest)',
    group: 'Backups',
  },
  BACKUP_COMPRESSION_THREADS: {
    schema: int(0, 64),
    default: 0,
    doc: 'Threads compressing in parallel (independent gzip members, like pigz). 0: one per core.',
    allowed: 'an integer from 0 (one per core) to 64',
    group: 'Backups',
  },
  BACKUP_DIR: {
    schema: text(),
    default: './backups',
    doc: 'Local directory backups go to when S3_BUCKET is unset.',
    allowed: 'a directory path',
    group: 'Backups',
  },
  BACKUP_TIMEOUT: {
    schema: duration(1000, 7 * 86_400_000),
    default: '6h',
    doc: 'A backup running longer than this is aborted (reason `timeout`).',
    allowed: 'a duration from 1s to 7d',
    group: 'Backups',
  },
  BACKUP_FROM: {
    schema: oneOf(['primary', 'standby', 'any'] as const),
    default: 'primary',
    doc: 'Which server a scheduled backup is taken from, judged at each run (pg_is_in_recovery()): primary, standby (a hot standby; see Standbys and failover for the settings it needs, which `doctor` checks), or any. A pg-maintd on the other kind skips the run (pgmaintd_job_skipped_total{reason="standby"|"primary"}). With standby or any, pg-maintd processes that share a store claim each slot in it, so one backup is taken per slot whichever server they watch; with primary, the lease alone elects, and the store has no say.',
    allowed: 'primary | standby | any',
    group: 'Backups',
  },
  BACKUP_MAX_STANDBY_LAG: {
    schema: duration(0, 86_400_000),
    default: '5m',
    doc: 'A backup from a hot standby (BACKUP_FROM=standby or any, or `pg-maintd backup` run against one) is refused (reason standby_lagging) when the standby is further behind its primary than this, has its replay paused, or is not streaming from a primary: it would hold old data that every check passes.',
    allowed: ms(0, 86_400_000, '1 day'),
    group: 'Backups',
  },
  BACKUP_LOCK_WAIT_TIMEOUT: {
    schema: duration(1000, 86_400_000),
    default: '5m',
    doc: 'How long a backup waits for the share lock it takes on each table (pg_dump --lock-wait-timeout, and the row counts). A session that holds a table locked exclusively for longer (a long ALTER TABLE, or a hostile LOCK TABLE) fails the backup with the table named, instead of holding it until BACKUP_TIMEOUT; the next scheduled run tries again.',
    allowed: ms(1000, 86_400_000, '1 day'),
    group: 'Backups',
  },
  BACKUP_ROW_COUNT_MAX_TABLE_SIZE: {
    schema: size(0, 2 ** 50),
    default: '1GiB',
    doc: 'Tables up to this size get exact row counts in the manifest (in the dump’s snapshot); larger ones get the planner estimate.',
    allowed: 'a size such as 512MiB, 1GiB, or bytes; 0 disables exact counts',
    group: 'Backups',
  },
  BACKUP_SIGNING_KEY_FILE: {
    schema: optionalText(),
    doc: 'A file holding the secret key(s) that sign every manifest and drill record (HMAC-SHA-256 over its content, which holds the backup’s SHA-256). Once set, restores, drills and retention refuse or ignore a backup whose signature is missing or wrong, so whoever can write to the store but lacks the key cannot plant a backup. One key per line, at least 32 bytes each (`openssl rand -base64 48`); the first signs, each verifies (rotation). The key never goes to the store, logs or metrics.',
    allowed: 'a path to a readable file holding one or more keys of at least 32 bytes, one per line',
    group: 'Backups',
  },
  BACKUP_ENCRYPTION_RECIPIENTS: {
    schema: ageRecipients(),
    doc: 'age public keys (`age1...`, from `age-keygen`) every object pg-maintd writes is encrypted to: dumps, globals, base backups, WAL segments and history files. Encrypted after compression, in the standard age format (`age -d -i key.txt X.sql.gz.age | gunzip` reads a dump). Several, separated by commas or spaces: any one of their identities decrypts. Only public keys are needed to back up; restores read BACKUP_ENCRYPTION_IDENTITY_FILE. Unset (and no file): objects are stored unencrypted.',
    allowed: 'one or more age recipients (age1...), separated by commas or spaces',
    group: 'Backups',
  },
  BACKUP_ENCRYPTION_RECIPIENTS_FILE: {
    schema: optionalText(),
    doc: 'A file of age recipients, one per line (# starts a comment), added to BACKUP_ENCRYPTION_RECIPIENTS.',
    allowed: 'a path to a readable file of age recipients (age1...), one per line',
    group: 'Backups',
  },
  BACKUP_ENCRYPTION_IDENTITY_FILE: {
    schema: optionalText(),
    doc: 'An age identity file (`AGE-SECRET-KEY-1...` lines, as `age-keygen -o` writes it) that restores, drills, `wal-fetch` and `pitr restore` decrypt with. Needed only where backups are read; keep it out of the daemon that only writes them. Its content never goes to logs, metrics or the store.',
    allowed: 'a path to a readable age identity file',
    group: 'Backups',
  },
  BACKUP_GLOBALS: {
    schema: bool(),
    default: true,
    doc: "With each scheduled backup run, store the cluster's globals once (`pg_dumpall --globals-only`: roles, memberships, role settings, tablespaces), so a restore onto a new server finds its owners. `pg-maintd restore --globals` applies them.",
    allowed: 'true | false',
    group: 'Backups',
  },
  BACKUP_GLOBALS_PASSWORDS: {
    schema: bool(),
    default: false,
    doc: "Store the roles' password hashes with the globals (pg_dumpall without --no-role-passwords). Needs a role that may read pg_authid (a superuser); encrypt the backups when it is on.",
    allowed: 'true | false',
    group: 'Backups',
  },
  RESTORE_SPOOL_DIR: {
    schema: optionalText(),
    doc: 'Folder where a restore or a drill keeps its checked copy of the backup: the object is read from the store once, its SHA-256 checked on the way into a private file, and only that copy is restored, so nothing a writer of the store does meanwhile can run. Needs room for the largest backup (compressed). Unset: the system temporary folder.',
    allowed: 'an existing directory with room for the largest backup',
    group: 'Backups',
  },
  PG_CLIENT_BIN_DIR: {
    schema: optionalText(),
    doc: 'Folder holding pg_dump, pg_restore and psql. Unset: found on PATH.',
    allowed: 'a directory path',
    group: 'Backups',
  },
  S3_BUCKET: {
    schema: optionalText().refine((v) => v === undefined || /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(v)),
    doc: 'Bucket for backups. Unset: backups go to BACKUP_DIR.',
    allowed: 'an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens',
    group: 'S3',
  },
  S3_PREFIX: {
    schema: z.preprocess(
      (v) => (typeof v === 'string' ? v.trim() : v),
      z
        .string()
        .max(512)
        .refine((v) => !v.startsWith('/') && !v.split('/').includes('..')),
    ),
    default: '',
    doc: 'Key prefix for backups in the bucket, e.g. `prod/`. Keys are `<prefix><database>/<database>_<YYYYMMDD_HHMMSS>.sql.gz`.',
    allowed: 'a key prefix without a leading / or .. segments, usually ending in /, e.g. prod/',
    group: 'S3',
  },
  S3_REGION: {
    schema: optionalText().refine((v) => v === undefined || /^[a-z0-9-]{2,32}$/.test(v)),
    doc: 'Region of the bucket. Unset: the SDK default chain (AWS_REGION, shared config), else us-east-1.',
    allowed: 'a region name such as eu-west-1',
    group: 'S3',
  },
  S3_ENDPOINT: {
    schema: url(['http:', 'https:']).optional(),
    doc: 'Endpoint of an S3-compatible store (MinIO, Ceph, R2...). Unset: AWS.',
    allowed: 'an http:// or https:// URL',
    group: 'S3',
  },
  S3_FORCE_PATH_STYLE: {
    schema: bool(),
    default: false,
    doc: 'Path-style addressing (bucket in the path), which most S3-compatible stores need.',
    allowed: 'true or false',
    group: 'S3',
  },
  S3_CHECKSUM: {
    schema: oneOf(S3_CHECKSUM_MODES).optional(),
    doc: 'Integrity checksums the AWS SDK adds to uploads and checks on downloads. when_supported: a CRC32 on every upload (the SDK’s default, which AWS S3 verifies); when_required: only where the S3 API demands one. Several S3-compatible stores refuse the checksum headers (see "S3-compatible stores"). pg-maintd checks every backup’s SHA-256 itself in either mode. Unset: when_required with S3_ENDPOINT, when_supported without (AWS).',
    allowed: S3_CHECKSUM_MODES.join(' | '),
    group: 'S3',
  },
  S3_SSE: {
    schema: oneOf(['AES256', 'aws:kms'] as const).optional(),
    doc: 'Server-side encryption of backup objects.',
    allowed: 'AES256 | aws:kms',
    group: 'S3',
  },
  S3_SSE_KMS_KEY_ID: {
    schema: optionalText(),
    doc: 'KMS key for S3_SSE=aws:kms. Unset: the bucket’s default key.',
    allowed: 'a KMS key id or ARN, with S3_SSE=aws:kms',
    group: 'S3',
  },
  S3_STORAGE_CLASS: {
    schema: oneOf(S3_STORAGE_CLASSES).optional(),
    doc: 'Storage class of backup objects.',
    allowed: S3_STORAGE_CLASSES.join(' | '),
    group: 'S3',
  },
  S3_PART_SIZE: {
    schema: size(5 * 1024 ** 2, 5 * 1024 ** 3).optional(),
    doc: 'Multipart part size (an object has at most 10,000 parts). Unset: the smallest part (at least 5 MiB) that fits 1.5x the database size; 16 MiB when the size is unknown. Memory holds about 4 parts.',
    allowed: 'a size from 5MiB to 5GiB',
    group: 'S3',
  },
  S3_MAX_ATTEMPTS: {
    schema: int(1, 20),
    default: 6,
    doc: 'Attempts per S3 request; throttling and 5xx answers are retried with exponential backoff.',
    allowed: 'an integer from 1 to 20',
    group: 'S3',
  },
  S3_REQUEST_TIMEOUT: {
    schema: duration(1000, 3_600_000),
    default: '2m',
    doc: 'Time limit of one S3 request (and of a socket that stops moving data); a request that times out is retried like a 5xx answer, up to S3_MAX_ATTEMPTS.',
    allowed: ms(1000, 3_600_000, '1 hour'),
    group: 'S3',
  },
  S3_OBJECT_LOCK: {
    schema: oneOf(['off', 'governance', 'compliance'] as const),
    default: 'off',
    doc: "S3 Object Lock mode of every object pg-maintd writes: the store itself refuses to delete or overwrite it for S3_OBJECT_LOCK_DAYS, even with the bucket owner's keys (compliance) or without the bypass permission (governance). The bucket must have Object Lock enabled. A delete retention makes before the lock ends is counted as retained and tried again later.",
    allowed: 'off | governance | compliance',
    group: 'S3',
  },
  S3_OBJECT_LOCK_DAYS: {
    schema: int(1, 36500).optional(),
    doc: 'Days an object stays locked after it is written. At least BACKUP_RETENTION_DAYS (and PITR_RETENTION_DAYS with WAL archiving), so nothing retention keeps is ever unlocked. Unset: the longer of the two.',
    allowed: 'an integer number of days from 1, at least the retention days',
    group: 'S3',
  },
  BACKUP_RETENTION_DAYS: {
    schema: int(1, 36500),
    default: 30,
    doc: 'Good backups older than this (by their manifest) are deleted, subject to the minimum count and GFS.',
    allowed: 'an integer number of days from 1',
    group: 'Retention',
  },
  BACKUP_RETENTION_MIN_COUNT: {
    schema: int(1, 10000),
    default: 3,
    doc: 'Retention never leaves fewer good backups than this, whatever their age.',
    allowed: 'an integer from 1',
    group: 'Retention',
  },
  BACKUP_KEEP_DAILY: {
    schema: int(0, 10000),
    default: 0,
    doc: 'GFS: also keep the newest good backup of each of the last N days.',
    allowed: 'an integer from 0 (off)',
    group: 'Retention',
  },
  BACKUP_KEEP_WEEKLY: {
    schema: int(0, 10000),
    default: 0,
    doc: 'GFS: also keep the newest good backup of each of the last N ISO weeks.',
    allowed: 'an integer from 0 (off)',
    group: 'Retention',
  },
  BACKUP_KEEP_MONTHLY: {
    schema: int(0, 10000),
    default: 0,
    doc: 'GFS: also keep the newest good backup of each of the last N months.',
    allowed: 'an integer from 0 (off)',
    group: 'Retention',
  },
  BACKUP_INCOMPLETE_GRACE: {
    schema: duration(60_000, 365 * 86_400_000),
    default: '1d',
    doc: 'Incomplete leftovers (data without a manifest) older than this are removed by retention.',
    allowed: 'a duration from 1m',
    group: 'Retention',
  },
  CLOCK_SKEW_TOLERANCE: {
    schema: duration(1000, 86_400_000),
    default: '5m',
    doc: 'How far the local clock may differ from the store’s (S3’s Date header, or a file just written in BACKUP_DIR) and the database server’s before retention deletes nothing; also how far a backup’s dates may run ahead of them, or its writer’s clock behind the database’s, before it is flagged misdated (never the latest, not counted toward BACKUP_RETENTION_MIN_COUNT, never deleted by retention).',
    allowed: ms(1000, 86_400_000, '1 day'),
    group: 'Retention',
  },
  BACKUP_VERIFY_SCHEDULE: {
    schema: cronOrOff(),
    default: '0 4 * * 0',
    doc: 'When the restore drill runs (cron, in SCHEDULE_TZ): the newest good backup is restored into a scratch database and its row counts compared. `off` disables it.',
    allowed: 'a cron expression, or off',
    group: 'Verification',
  },
  VERIFY_DATABASE_URL: {
    schema: url(['postgres:', 'postgresql:']).optional(),
    doc: 'Server for restore drills (its user needs CREATEDB). Unset: the server of DATABASE_URL.',
    allowed: 'a postgres:// URL',
    secret: 'url',
    group: 'Verification',
  },
  WAL_ARCHIVE: {
    schema: oneOf(['off', 'stream', 'command'] as const),
    default: 'off',
    doc: "Continuous WAL archiving for point-in-time recovery. `stream`: the leader pg-maintd runs pg_receivewal through a physical replication slot (WAL_SLOT) into WAL_SPOOL_DIR and uploads every finished segment, history file and, every WAL_PARTIAL_UPLOAD_INTERVAL, the segment being written; it also takes the base backups (BASEBACKUP_SCHEDULE) and PITR drills (PITR_DRILL_SCHEDULE). `command`: the server archives through `archive_command = 'pg-maintd wal-push %p'` and the daemon takes base backups and drills. The role needs the REPLICATION attribute and a pg_hba replication entry (`pg-maintd doctor` checks both).",
    allowed: 'off | stream | command',
    group: 'PITR',
  },
  WAL_SLOT: {
    schema: z.string().regex(/^[a-z0-9_]{1,63}$/),
    default: 'pgmaintd',
    doc: 'The physical replication slot pg_receivewal streams through (created if missing), so no WAL is lost while pg-maintd restarts. Set max_slot_wal_keep_size on the server so a slot left behind cannot fill its disk.',
    allowed: 'a slot name: 1 to 63 lower-case letters, digits or underscores',
    group: 'PITR',
  },
  WAL_SPOOL_DIR: {
    schema: text(),
    default: './wal-spool',
    doc: 'Local directory pg_receivewal writes into; each file is removed once it is in the store. Keep it on a persistent volume: WAL in it has already been acknowledged to the server.',
    allowed: 'a directory path',
    group: 'PITR',
  },
  WAL_PARTIAL_UPLOAD_INTERVAL: {
    schema: duration(1000, 600_000),
    default: '10s',
    doc: "How often the segment being written (pg_receivewal's .partial file) is uploaded when it has grown: the most WAL a lost host can take with it (the RPO), instead of a whole 16 MiB segment.",
    allowed: ms(1000, 600_000, '10 minutes'),
    group: 'PITR',
  },
  BASEBACKUP_SCHEDULE: {
    schema: cronOrOff(),
    default: '0 3 * * 0',
    doc: 'When base backups (pg_basebackup, tar, gzip, to the store) run, in SCHEDULE_TZ, while WAL_ARCHIVE is on. Restores replay WAL from the newest base backup before the target, so more frequent base backups make restores faster. `off` disables them.',
    allowed: 'a cron expression, or off',
    group: 'PITR',
  },
  PITR_RETENTION_DAYS: {
    schema: int(1, 3650),
    default: 30,
    doc: 'Any second of this many days can be restored: the newest base backup older than the window, every later one, and all WAL from the oldest kept base backup on are kept; older ones are deleted. A gap in the WAL chain stops WAL deletion.',
    allowed: 'an integer from 1 to 3650',
    group: 'PITR',
  },
  PITR_DRILL_SCHEDULE: {
    schema: cronOrOff(),
    default: '0 5 * * 0',
    doc: 'When the PITR drill runs, in SCHEDULE_TZ, while WAL_ARCHIVE is on: the newest base backup plus WAL is restored into a scratch directory to a recent time, started with the server binaries of PG_SERVER_BIN_DIR, to the microsecond before the newest heartbeat, and the heartbeat row found must be the one numbered before it; how far before the target it lies is recorded. Where no numbered heartbeat anchors the target (archiving lags, an older writer), the row must lie within one PITR_HEARTBEAT_INTERVAL and a second before a target taken from the store. `off` disables it.',
    allowed: 'a cron expression, or off',
    group: 'PITR',
  },
  PITR_HEARTBEAT_INTERVAL: {
    schema: duration(1000, 3_600_000),
    default: '5s',
    doc: 'How often the leader writes a timestamped, numbered row into pgmaintd.pitr_heartbeat while WAL_ARCHIVE is on: the drill checks its restore against these rows, and they keep WAL moving on an idle server.',
    allowed: ms(1000, 3_600_000, '1 hour'),
    group: 'PITR',
  },
  PG_SERVER_BIN_DIR: {
    schema: optionalText(),
    doc: "Directory holding the PostgreSQL server binaries (postgres, pg_ctl, initdb) for PITR drills and `pitr restore --start`. Unset: found as the demo finds them (Debian's /usr/lib/postgresql/<major>/bin, the PATH), matching the server's major version.",
    allowed: 'an existing directory holding postgres and pg_ctl',
    group: 'PITR',
  },
  METRICS_INTERVAL: {
    schema: duration(1000, 3_600_000),
    default: '15s',
    doc: 'How often each collector polls the database; /metrics serves the cached result and never queries.',
    allowed: ms(1000, 3_600_000, '1 hour'),
    group: 'Metrics',
  },
  METRICS_COLLECTOR_INTERVALS: {
    schema: intervalMap(METRICS_COLLECTORS, 1000, 86_400_000, COLLECTOR_ALIASES),
    doc: `Per-collector poll intervals that differ from METRICS_INTERVAL, as name=duration pairs; \`off\` disables a collector, an interval enables one that is off by default (${COLLECTORS_OFF_BY_DEFAULT.join(', ')}). E.g. \`stat_statements=1m,stat_user_tables=5m,locks=off,stat_user_indexes=5m\`. Collectors: ${METRICS_COLLECTORS.join(', ')}.`,
    allowed: `comma-separated name=duration or name=off pairs (durations from 1s to 1 day), names among ${METRICS_COLLECTORS.join(', ')}`,
    group: 'Metrics',
  },
  METRICS_DATABASES: {
    schema: z.union([z.literal('*'), databaseList()]),
    doc: 'Databases the per-database collectors (table statistics) connect to, comma-separated; `*` discovers every database that allows connections. Unset: the database of DATABASE_URL.',
    allowed: 'database names separated by commas, or *',
    group: 'Metrics',
  },
  METRICS_MAX_CONNECTIONS: {
    schema: int(1, 100),
    default: 3,
    doc: 'Connections the metrics poller holds at most, every database of METRICS_DATABASES and the server-wide collectors together: databases are polled a few at a time, and a connection to any database but that of DATABASE_URL is closed after its poll. Near the server’s connection limit (fewer than a tenth of its slots free, at least 3) it polls with fewer, down to 1.',
    allowed: 'an integer from 1 to 100',
    group: 'Metrics',
  },
  METRICS_STATEMENT_TIMEOUT: {
    schema: duration(100, 600_000),
    default: '5s',
    doc: 'statement_timeout of every collector query (and the wait for a metrics connection).',
    allowed: ms(100, 600_000, '10 minutes'),
    group: 'Metrics',
  },
  METRICS_LOCK_TIMEOUT: {
    schema: duration(10, 600_000),
    default: '1s',
    doc: 'lock_timeout of every collector query, so a poll never queues behind the application.',
    allowed: ms(10, 600_000, '10 minutes'),
    group: 'Metrics',
  },
  METRICS_DATABASE_SIZE_INTERVAL: {
    schema: duration(1000, 86_400_000),
    default: '5m',
    doc: 'How often database sizes (pg_database_size_bytes) are polled: they are costly with many databases.',
    allowed: ms(1000, 86_400_000, '1 day'),
    group: 'Metrics',
  },
  METRICS_LOCK_WAIT_LOG_AFTER: {
    schema: duration(0, 86_400_000),
    default: '30s',
    doc: 'A lock wait longer than this is logged once, naming the blocked and the blocking sessions.',
    allowed: ms(0, 86_400_000, '1 day'),
    group: 'Metrics',
  },
  METRICS_TABLES_LIMIT: {
    schema: int(1, 100_000),
    default: 100,
    doc: "Table statistics (`pg_stat_user_tables_*`, `pg_statio_user_tables_*`, and the table bloat estimate) cover the largest this many tables of each database, and index statistics (`pg_stat_user_indexes_*`, the btree bloat estimate) the largest this many indexes, bounding the series. Largest by the planner's size estimate (`pg_class.relpages` of the table, its TOAST and indexes, as of their last VACUUM, ANALYZE or CREATE INDEX), so a poll reads no file; the sizes exported are exact.",
    allowed: 'an integer from 1 to 100000',
    group: 'Metrics',
  },
  METRICS_STATEMENTS_LIMIT: {
    schema: int(1, 10_000),
    default: 100,
    doc: 'pg_stat_statements series cover the union of the top N statements by total time and the top N by mean time.',
    allowed: 'an integer from 1 to 10000',
    group: 'Metrics',
  },
  METRICS_QUERY_TEXT: {
    schema: bool(),
    default: false,
    doc: 'Export query text (pg_stat_statements_query_id{queryid,query}), truncated, every literal masked as `?` (utility statements such as ALTER ROLE ... PASSWORD keep theirs in pg_stat_statements) and comments removed. Off by default.',
    allowed: 'true or false',
    group: 'Metrics',
  },
  METRICS_QUERY_TEXT_LENGTH: {
    schema: int(16, 10_000),
    default: 120,
    doc: 'Characters of query text kept when METRICS_QUERY_TEXT is on.',
    allowed: 'an integer from 16 to 10000',
    group: 'Metrics',
  },
  MIGRATE_ON_START: {
    schema: bool(),
    default: true,
    doc: "Apply pending schema migrations when the daemon starts, in the background: backups, drills and metrics do not wait for them. A held lock is waited for; a failing migration is reported, never a reason to exit. Only a database that is empty (extensions' objects and pg-maintd's own aside) or under pg-maintd's migration history is migrated; any other is left alone with a warning: `migrate up` builds the application schema into it, `migrate baseline` adopts one that holds it.",
    allowed: 'true or false',
    group: 'Migrations',
  },
  MIGRATIONS_DIR: {
    schema: optionalText(),
    doc: 'Folder of the NNNN_name.sql migration files. Unset: the migrations/ folder shipped with pg-maintd (the sample application schema).',
    allowed: 'an existing directory',
    group: 'Migrations',
  },
  MIGRATE_LOCK_WAIT: {
    schema: duration(1000, 86_400_000),
    default: '5m',
    doc: 'How long `migrate up` and `migrate baseline` wait for the migration lock (another runner, or any session holding it) before giving up with exit 69, naming the holder. The daemon waits as long as it takes.',
    allowed: ms(1000, 86_400_000, '1 day'),
    group: 'Migrations',
  },
  MIGRATE_LOCK_TIMEOUT: {
    schema: duration(0, 3_600_000),
    default: '10s',
    doc: 'lock_timeout of each migration statement, so DDL never queues the application behind it for long (CREATE INDEX CONCURRENTLY also waits for older transactions under it). 0: no limit.',
    allowed: ms(0, 3_600_000, '1 hour'),
    group: 'Migrations',
  },
  MAINTENANCE_SCHEDULE: {
    schema: cronOrOff(),
    default: '30 3 * * *',
    doc: 'When the maintenance job runs (cron, in SCHEDULE_TZ): VACUUM (ANALYZE) or ANALYZE of the tables that need it, and REINDEX INDEX CONCURRENTLY of invalid or bloated btree indexes. `off` disables it.',
    allowed: 'a cron expression such as "30 3 * * *", or off',
    group: 'Maintenance',
  },
  MAINTENANCE_DATABASES: {
    schema: databaseList(),
    doc: 'Comma-separated databases to maintain. Unset: the database of DATABASE_URL.',
    allowed: 'distinct database names of 1 to 63 bytes separated by commas, e.g. app,billing',
    group: 'Maintenance',
  },
  MAINTENANCE_VACUUM_DEAD_RATIO: {
    schema: ratio(),
    default: 0.2,
    doc: 'A table is vacuumed when its dead rows are at least this share of its rows (n_dead_tup / (n_live_tup + n_dead_tup)) and number at least MAINTENANCE_VACUUM_MIN_DEAD_TUPLES.',
    allowed: 'a number above 0 and at most 1, e.g. 0.2',
    group: 'Maintenance',
  },
  MAINTENANCE_VACUUM_MIN_DEAD_TUPLES: {
    schema: int(0, 1_000_000_000),
    default: 1000,
    doc: 'Fewest dead rows for the dead-row share to count (small tables are left to autovacuum).',
    allowed: 'an integer from 0 to 1000000000',
    group: 'Maintenance',
  },
  MAINTENANCE_VACUUM_STALE_AFTER: {
    schema: duration(0, 3650 * 86_400_000),
    default: '7d',
    doc: 'A table with any dead rows whose last vacuum (manual or autovacuum) is older than this, or that was never vacuumed, is vacuumed. 0 turns this check off.',
    allowed: 'a duration such as 7d or 12h, up to 3650d; 0 turns it off',
    group: 'Maintenance',
  },
  MAINTENANCE_ANALYZE_STALE_AFTER: {
    schema: duration(0, 3650 * 86_400_000),
    default: '7d',
    doc: 'A table with rows changed since its last analyze (manual or autoanalyze), when that is older than this or never happened, is analyzed. 0 turns this check off.',
    allowed: 'a duration such as 7d or 12h, up to 3650d; 0 turns it off',
    group: 'Maintenance',
  },
  MAINTENANCE_REINDEX_BLOAT_RATIO: {
    schema: ratio(),
    default: 0.5,
    doc: 'A valid btree index is rebuilt (REINDEX INDEX CONCURRENTLY) when its bloat, the share of its pages beyond what its rows need at its fillfactor, is at least this. Estimated from statistics; measured with pgstatindex when the pgstattuple extension is installed. 1 turns bloat rebuilds off (invalid indexes are still rebuilt).',
    allowed: 'a number above 0 and at most 1 (1: off), e.g. 0.5',
    group: 'Maintenance',
  },
  MAINTENANCE_REINDEX_MIN_SIZE: {
    schema: size(0, 2 ** 50),
    default: '10MiB',
    doc: 'Smaller indexes are never rebuilt for bloat.',
    allowed: 'a size such as 10MiB or 1GiB, or bytes',
    group: 'Maintenance',
  },
  MAINTENANCE_LOCK_TIMEOUT: {
    schema: duration(10, 600_000),
    default: '5s',
    doc: 'lock_timeout of every maintenance statement: a table or index whose lock is not granted within it is skipped (logged, counted, retried on the next run), so maintenance never queues the application behind it for longer. REINDEX CONCURRENTLY also waits for older transactions under it.',
    allowed: ms(10, 600_000, '10 minutes'),
    group: 'Maintenance',
  },
  MAINTENANCE_STATEMENT_TIMEOUT: {
    schema: duration(0, 7 * 86_400_000),
    default: '6h',
    doc: 'statement_timeout of every maintenance statement (one VACUUM, ANALYZE or REINDEX). 0: no limit.',
    allowed: 'a duration such as 6h, up to 7d; 0: no limit',
    group: 'Maintenance',
  },
  HTTP_HOST: {
    schema: host(),
    default: '0.0.0.0',
    doc: 'Address the HTTP server (/metrics, /healthz, /readyz) listens on.',
    allowed: 'an IP address or host name, e.g. 0.0.0.0, 127.0.0.1, ::',
    group: 'HTTP',
  },
  HTTP_PORT: {
    schema: int(0, 65535),
    default: 9188,
    doc: 'Port of the HTTP server. 0 picks a free port (logged at start).',
    allowed: 'an integer from 0 to 65535',
    group: 'HTTP',
  },
  WEB_CONFIG_FILE: {
    schema: optionalText(),
    doc: 'Web config file in the format of Prometheus exporter-toolkit (what postgres_exporter’s `--web.config.file` reads): TLS (`tls_server_config`), extra response headers (`http_server_config`) and basic-auth users with bcrypt hashes (`basic_auth_users`). Relative paths inside it are resolved against its folder. Checked at start, re-read when it or a file it names changes. /healthz and /readyz stay open.',
    allowed:
      'a path to a readable exporter-toolkit web config YAML file (see "Protecting the endpoints" in the README)',
    group: 'HTTP',
  },
  WEB_BEARER_TOKEN_FILE: {
    schema: optionalText(),
    doc: 'File holding a token that /metrics also accepts as `Authorization: Bearer <token>` (Prometheus `authorization.credentials_file`); surrounding whitespace is ignored. Re-read when it changes.',
    allowed: 'a path to a readable file holding one token',
    group: 'HTTP',
  },
  READYZ_INTERVAL: {
    schema: duration(100, 60_000),
    default: '2s',
    doc: 'How often the readiness check runs `SELECT 1`; /readyz answers from its last result.',
    allowed: ms(100, 60_000, '1 minute'),
    group: 'HTTP',
  },
  READYZ_TIMEOUT: {
    schema: duration(50, 60_000),
    default: '1s',
    doc: 'Time limit of the readiness `SELECT 1`, connecting included.',
    allowed: ms(50, 60_000, '1 minute'),
    group: 'HTTP',
  },
  LIVENESS_MAX_LAG: {
    schema: duration(50, 600_000),
    default: '5s',
    doc: 'Event-loop or scheduler stall beyond which /healthz answers 503.',
    allowed: ms(50, 600_000, '10 minutes'),
    group: 'HTTP',
  },
  LOG_LEVEL: {
    schema: oneOf(LOG_LEVELS),
    default: 'info',
    doc: 'Least severe level logged.',
    allowed: LOG_LEVELS.join(' | '),
    group: 'Logging',
  },
  LOG_FORMAT: {
    schema: oneOf(['auto', 'json', 'pretty'] as const),
    default: 'auto',
    doc: 'auto: pretty when the log stream is a terminal, JSON otherwise. `run` logs to standard output; the one-shot commands log to standard error and keep standard output for their result (so `--json` output can be piped into jq).',
    allowed: 'auto | json | pretty',
    group: 'Logging',
  },
  SHUTDOWN_GRACE_PERIOD: {
    schema: duration(0, 3_600_000),
    default: '25s',
    doc: 'How long the first SIGTERM/SIGINT may drain before the exit is forced (exit 124). Keep it below the orchestrator’s own grace (Kubernetes: 30 s).',
    allowed: ms(0, 3_600_000, '1 hour'),
    group: 'Lifecycle',
  },
} as const satisfies Record<string, FieldSpec>;

export type FieldName = keyof typeof FIELDS;
export const FIELD_NAMES = Object.keys(FIELDS) as FieldName[];

/** `DB_POOL_MAX` -> `--db-pool-max` */
export function flagFor(name: string): string {
  return `--${name.toLowerCase().replace(/_/g, '-')}`;
}
