// No secret leaks, across a full run. Distinctive random secrets (the database role's
// password, in DATABASE_URL, in PGPASSWORD and in DATABASE_URL_FILE; the verification server's
// password; the S3 secret access key, checked for real by a SigV4-verifying proxy in front of
// s3rver; the /metrics bearer token and basic-auth password; and the wrong ones the faults use) go
// through every command as a spawned process, a running daemon and its scrapes, and the faults.
// Meanwhile every process's command line on the machine is sampled. Then every output, log line
// (JSON and pretty), HTTP body, command line and non-data file is searched for every secret: as is,
// URL-encoded, JSON-escaped, base64, and its random part alone (a half-masked secret). A self-test
// proves the search can fail. The scan needs a server that checks passwords (the harness's cluster
// uses scram-sha-256): the second test fails at once on one that trusts.
//
// pg_dump, pg_restore and psql: the README says they get the password through their environment,
// never their arguments. So their environ must hold PGPASSWORD (their own password, nothing else
// secret) and be readable by our user only (0400); their argv must hold no secret.
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client, CreateBucketCommand } from '@aws-sdk/client-s3';
import bcrypt from 'bcryptjs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARTIAL_MARK } from '../../src/backup/storage/fs.js';
import { freePort } from '../../src/core/free-port.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { spawnCli, waitFor, type SpawnedCli } from '../support/daemon.js';
import { adminUrl, withDatabase } from '../support/postgres.js';
import { ProcSampler, readEnviron, SecretScanner, type ProcSeen } from '../support/secret-scan.js';
import { startSigV4Proxy, type SigV4Proxy } from '../support/sigv4-proxy.js';
import { tempDir } from '../support/temp.js';

const hex = (n = 8) => randomBytes(n).toString('hex');
const suffix = hex(3);
const APP_ROLE = `ss_app_${suffix}`;
const VERIFY_ROLE = `ss_verify_${suffix}`;
const APP_DB = `ss_app_${suffix}`;
const RESTORED_DB = `ss_restored_${suffix}`;
const ENC_RESTORED_DB = `ss_enc_restored_${suffix}`;
const BULK_DB = `ss_bulk_${suffix}`;
const ACCESS_KEY_ID = `AKIASS${suffix.toUpperCase()}`;

// '+', '/' and '=' make the URL-encoded forms differ from the raw ones, as in real passwords
const SECRETS = {
  DB_PASSWORD: `pw-${hex()}+/=`,
  VERIFY_PASSWORD: `pw-${hex()}/v`,
  // an '@' left unencoded in a URL: WHATWG URL takes the last '@' as the end of the password
  WRONG_DB_PASSWORD: `pw@wrong-${hex()}`,
  BAD_URL_PASSWORD: `pw@badurl-${hex()}`,
  USER_AT_PASSWORD: `pw-userat-${hex()}`,
  S3_SECRET: `s3-${hex()}/+k`,
  WRONG_S3_SECRET: `s3-wrong-${hex()}/x`,
};
// the endpoints' credentials (WEB_BEARER_TOKEN_FILE, and basic_auth_users of WEB_CONFIG_FILE)
const WEB = {
  BEARER_TOKEN: `tok-${hex()}`,
  WRONG_BEARER_TOKEN: `tok-wrong-${hex()}`,
  BASIC_PASSWORD: `basic-${hex()}/+`,
  WRONG_BASIC_PASSWORD: `basic-wrong-${hex()}`,
};
const BASIC_USER = 'prometheus';
const basicHeader = (password: string) =>
  `Basic ${Buffer.from(`${BASIC_USER}:${password}`).toString('base64')}`;
// the bcrypt hash is not the password, but it is what an offline guesser needs: not printed either
const BASIC_HASH = bcrypt.hashSync(WEB.BASIC_PASSWORD, 4);

const scanner = new SecretScanner(SECRETS);
for (const [name, value] of Object.entries(WEB))
  scanner.addSecret(
    name,
    value,
    name.includes('BASIC') ? { 'basic-auth header': basicHeader(value).slice(6) } : {},
  );
scanner.addSecret('BASIC_AUTH_HASH', BASIC_HASH);
/** Our client-program processes (pg_dump, psql, pg_restore), seen while they ran. */
const clients: Array<ProcSeen & { env: Map<string, string>; environMode: number; environUid: number }> = [];
let bulkDumpPid: number | undefined;
const sampler = new ProcSampler(40, (p) => {
  if (!['pg_dump', 'psql', 'pg_restore'].includes(p.comm)) return;
  const environ = readEnviron(p.pid);
  if (!environ) return;
  const user = environ.env.get('PGUSER');
  if (user !== APP_ROLE && user !== VERIFY_ROLE) return; // another test file's
  clients.push({ ...p, env: environ.env, environMode: environ.mode, environUid: environ.uid });
  if (p.comm === 'pg_dump' && environ.env.get('PGDATABASE') === BULK_DB) bulkDumpPid = p.pid;
});

const port = () => new URL(adminUrl()).port;
function dbUrl(database: string, user: string, password?: string): string {
  const auth = password === undefined ? user : `${user}:${encodeURIComponent(password)}`;
  return `postgresql://${auth}@127.0.0.1:${port()}/${database}`;
}

let s3dir = '';
let s3rver: { close(): Promise<void> } | undefined;
let proxy: SigV4Proxy;
let bucket = '';
let s3: S3Client;
const backupDir = tempDir('pgmaintd-secret-scan-');
/** The operator's own files that hold secrets (web config, token, URL file): not output, not scanned. */
const secretsDir = tempDir('pgmaintd-secret-scan-files-');
const dirs = [backupDir, secretsDir];
const webConfigFile = join(secretsDir, 'web-config.yml');
const tokenFile = join(secretsDir, 'token');
const urlFile = join(secretsDir, 'database-url');
const webFiles = () => ({ WEB_CONFIG_FILE: webConfigFile, WEB_BEARER_TOKEN_FILE: tokenFile });
/** age key pairs from age-keygen: the identity files are the operator's (not scanned), what they hold is a secret. */
function ageKeyPair(name: string): { file: string; recipient: string; identity: string } {
  const file = join(secretsDir, name);
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
  const identity = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('AGE-SECRET-KEY-'))!;
  return { file, recipient: execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim(), identity };
}
const AGE = ageKeyPair('backup-key.txt');
const WRONG_AGE = ageKeyPair('wrong-key.txt');
scanner.addAgeIdentity('AGE_IDENTITY', AGE.identity);
scanner.addAgeIdentity('WRONG_AGE_IDENTITY', WRONG_AGE.identity);
const encDir = tempDir('pgmaintd-secret-scan-encrypted-');
dirs.push(encDir);

function base(): Record<string, string> {
  return {
    DB_SSL_MODE: 'disable',
    BACKUP_SCHEDULE: 'off',
    BACKUP_VERIFY_SCHEDULE: 'off',
    MAINTENANCE_SCHEDULE: 'off',
    BACKUP_COMPRESSION_THREADS: '2',
    LOG_LEVEL: 'debug',
    VERIFY_DATABASE_URL: dbUrl('postgres', VERIFY_ROLE, SECRETS.VERIFY_PASSWORD),
    // the drill role may only create databases: it cannot give a plain dump's objects to their owner,
    // so the plain dumps here leave owners out (kept owners: restore-owners.test.ts)
    BACKUP_OWNERSHIP: 'omit',
  };
}
/** Variant A: the password in DATABASE_URL. */
const inUrl = () => ({ ...base(), DATABASE_URL: dbUrl(APP_DB, APP_ROLE, SECRETS.DB_PASSWORD) });
/** Variant B: the password in PGPASSWORD. */
const inEnv = () => ({ ...base(), DATABASE_URL: dbUrl(APP_DB, APP_ROLE), PGPASSWORD: SECRETS.DB_PASSWORD });
const toS3 = (secret = SECRETS.S3_SECRET, endpoint = proxy.url) => ({
  S3_BUCKET: bucket,
  S3_ENDPOINT: endpoint,
  S3_FORCE_PATH_STYLE: 'true',
  S3_REGION: 'us-east-1',
  S3_MAX_ATTEMPTS: '2',
  AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY: secret,
});
const toDir = () => ({ BACKUP_DIR: backupDir });

interface Ran {
  code: number | null;
  out: string;
}
const runs: Array<{ label: string; code: number | null }> = [];

function capture(label: string, cli: SpawnedCli): void {
  scanner.capture(`output of ${label}`, cli.output());
}

/** Runs one CLI command to its end; its output joins the scan. */
async function cli(label: string, args: string[], env: Record<string, string>): Promise<Ran> {
  const c = spawnCli(args, env);
  sampler.sample();
  const { code } = await c.exited;
  capture(label, c);
  runs.push({ label, code });
  return { code, out: c.output() };
}

async function scrape(
  label: string,
  url: string,
  init?: RequestInit,
): Promise<{ status: number; body: string }> {
  const res = await fetch(url, init);
  const body = await res.text();
  scanner.capture(`${label} ${url} -> ${res.status}`, `${JSON.stringify([...res.headers])}\n${body}`);
  return { status: res.status, body };
}

/** Every file under `dir`, except backup data itself (the dump of the database). */
function scanFiles(label: string, dir: string): string[] {
  const scanned: string[] = [];
  for (const f of readdirSync(dir, { recursive: true }).map(String)) {
    const path = join(dir, f);
    if (!statSync(path).isFile()) continue;
    if (/\.(sql|dump)\.gz($|\._S3rver_object$)/.test(f)) continue;
    scanner.capture(`${label} file ${f}`, readFileSync(path));
    scanned.push(f);
  }
  return scanned;
}

beforeAll(async () => {
  sampler.start();
  writeFileSync(webConfigFile, `basic_auth_users:\n  ${BASIC_USER}: '${BASIC_HASH}'\n`, { mode: 0o600 });
  writeFileSync(tokenFile, `${WEB.BEARER_TOKEN}\n`, { mode: 0o600 });
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    // CREATE ROLE ... PASSWORD lands in pg_stat_statements as written (track_utility is on); the
    // daemon test exports the query text (METRICS_QUERY_TEXT), so its literal masking is scanned too
    await admin.query(
      `CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${SECRETS.DB_PASSWORD}' CREATEDB IN ROLE pg_monitor`,
    );
    await admin.query(`CREATE ROLE ${VERIFY_ROLE} LOGIN PASSWORD '${SECRETS.VERIFY_PASSWORD}' CREATEDB`);
    for (const db of [APP_DB, RESTORED_DB, ENC_RESTORED_DB, BULK_DB])
      await admin.query(`CREATE DATABASE ${db} OWNER ${APP_ROLE}`);
  } finally {
    await admin.end();
  }
  // enough rows for a dump that is still running when it is killed
  const bulk = new pg.Client({ connectionString: dbUrl(BULK_DB, APP_ROLE, SECRETS.DB_PASSWORD) });
  await bulk.connect();
  await bulk.query(`CREATE TABLE blobs AS
    SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(g::text) AS a
      FROM generate_series(1, 250000) g`);
  await bulk.end();

  // s3rver behind a proxy that checks SigV4 with our key pair (s3rver knows the key id, not v4)
  const require = createRequire(import.meta.url);
  const account = require('s3rver/lib/models/account.js') as {
    DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void };
  };
  account.DUMMY_ACCOUNT.createKeyPair(ACCESS_KEY_ID, SECRETS.S3_SECRET);
  const { default: S3rver } = await import('s3rver');
  s3dir = tempDir('pgmaintd-secret-scan-s3-');
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: s3dir });
  const addr = await server.run();
  s3rver = server;
  proxy = await startSigV4Proxy({
    target: `http://127.0.0.1:${addr.port}`,
    accessKeyId: ACCESS_KEY_ID,
    secretAccessKey: SECRETS.S3_SECRET,
  });
  s3 = new S3Client({
    endpoint: proxy.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRETS.S3_SECRET },
  });
  bucket = `secret-scan-${suffix}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
});

afterAll(async () => {
  sampler.stop();
  s3?.destroy();
  await proxy?.close();
  await s3rver?.close();
  for (const d of [...dirs, s3dir]) if (d) rmSync(d, { recursive: true, force: true });
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    for (const db of [APP_DB, RESTORED_DB, ENC_RESTORED_DB, BULK_DB])
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    for (const r of [APP_ROLE, VERIFY_ROLE])
      await admin.query(`DROP ROLE IF EXISTS ${r}`).catch(() => undefined);
  } finally {
    await admin.end();
  }
});

describe('secret scan', () => {
  it('self-test: the scanner finds a planted secret, and the sampler sees other processes', async () => {
    const canaryCore = hex();
    const canary = `canary@${canaryCore}+/=`;
    const planted = new SecretScanner({ CANARY: canary });
    planted.capture('clean', 'postgresql://app:****@db/app and nothing else');
    expect(planted.leaks()).toEqual([]);
    planted.capture(
      'planted url',
      `{"msg":"connecting","url":"postgresql://app:${encodeURIComponent(canary)}@db/app"}`,
    );
    planted.capture('planted json', JSON.stringify({ password: canary }));
    planted.capture('planted colour', `\u001b[32m${canary.slice(0, 5)}\u001b[39m${canary.slice(5)}`);
    // cut at its '@' by a mask that stops too early: the random part still gives it away
    planted.capture('half masked', `postgresql://app:****@${canaryCore}+/=@db/app`);
    const hits = planted.leaks();
    expect(hits.map((h) => `${h.source}: ${h.form}`)).toEqual(
      expect.arrayContaining([
        'planted url: url-encoded',
        'planted json: raw',
        'planted colour (colours removed): raw',
        'half masked: random part',
      ]),
    );
    expect(hits.every((h) => !h.context.includes(canary))).toBe(true); // the report does not leak it

    // a process with the canary in its arguments, alive for a moment: the sampler must catch it
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 800)', canary], { stdio: 'ignore' });
    await waitFor(
      async () => [...sampler.cmdlines].some((c) => c.includes(canary)),
      (x) => x,
      3000,
      20,
    );
    await new Promise((r) => child.on('exit', r));
    const fromProc = new SecretScanner({ CANARY: canary });
    for (const c of sampler.cmdlines) fromProc.capture('cmdline', c);
    expect(fromProc.leaks().length).toBeGreaterThan(0);
  });

  it('the secrets are really needed: a wrong database password and a wrong S3 secret are refused', async () => {
    const wrong = new pg.Client({ connectionString: dbUrl(APP_DB, APP_ROLE, SECRETS.WRONG_DB_PASSWORD) });
    await expect(wrong.connect()).rejects.toThrow(/password authentication failed/);
    await wrong.end().catch(() => undefined);
    const bad = new S3Client({
      endpoint: proxy.url,
      region: 'us-east-1',
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRETS.WRONG_S3_SECRET },
    });
    await expect(bad.send(new ListObjectsV2Command({ Bucket: bucket }))).rejects.toThrow(/signature/i);
    bad.destroy();
    expect(proxy.stats.accepted).toBeGreaterThan(0); // the bucket was created with the right one
  });

  it('one-shot commands: check-config, migrate, backup to S3 and to a folder, list, restore, verify, doctor, status', async () => {
    const cc = await cli('check-config (password in URL, S3)', ['check-config'], { ...inUrl(), ...toS3() });
    expect(cc.code, cc.out).toBe(0);
    expect(cc.out).toMatch(/DATABASE_URL\s+postgresql:\/\/ss_app_\w+:\*\*\*\*@/);
    const ccj = await cli('check-config --json (PGPASSWORD, folder, web files)', ['check-config', '--json'], {
      ...inEnv(),
      ...toDir(),
      ...webFiles(),
    });
    expect(ccj.code, ccj.out).toBe(0);
    expect(ccj.out).toContain(tokenFile); // the path, not what it holds
    // the URL, password included, in DATABASE_URL_FILE
    writeFileSync(urlFile, `${dbUrl(APP_DB, APP_ROLE, SECRETS.DB_PASSWORD)}\n`, { mode: 0o600 });
    const ccf = await cli('check-config (DATABASE_URL_FILE)', ['check-config'], {
      ...base(),
      DATABASE_URL_FILE: urlFile,
    });
    expect(ccf.code, ccf.out).toBe(0);
    // a user name with an '@' in it (Azure's user@server), the password after it
    const userAt = await cli('check-config (user@server:password in the URL)', ['check-config'], {
      ...base(),
      DATABASE_URL: `postgresql://${APP_ROLE}@srv:${SECRETS.USER_AT_PASSWORD}@127.0.0.1:${port()}/${APP_DB}`,
    });
    expect(userAt.code, userAt.out).toBe(0);

    const mig = await cli('migrate up', ['migrate', 'up'], inUrl());
    expect(mig.code, mig.out).toBe(0);
    const st = await cli('migrate status (DATABASE_URL_FILE)', ['migrate', 'status'], {
      ...base(),
      DATABASE_URL_FILE: urlFile,
    });
    expect(st.code, st.out).toBe(0);
    const app = new pg.Client({ connectionString: dbUrl(APP_DB, APP_ROLE, SECRETS.DB_PASSWORD) });
    await app.connect();
    await app.query(`INSERT INTO users (email, password_hash) SELECT 'u' || g || '@x', 'h' FROM generate_series(1, 3000) g;
      INSERT INTO projects (user_id, name) SELECT id, 'p ' || email FROM users;
      INSERT INTO tasks (project_id, title) SELECT id, 't ' || name FROM projects`);
    await app.end();

    const b1 = await cli('backup (S3, password in URL)', ['backup'], { ...inUrl(), ...toS3() });
    expect(b1.code, b1.out).toBe(0);
    const ls = await cli('backups list (S3)', ['backups', 'list'], { ...inUrl(), ...toS3() });
    expect(ls.code, ls.out).toBe(0);
    const lsj = await cli('backups list --json (S3)', ['backups', 'list', '--json'], {
      ...inEnv(),
      ...toS3(),
    });
    expect(lsj.code, lsj.out).toBe(0);

    const restore = await cli(
      'restore (S3 -> empty database, PGPASSWORD)',
      ['restore', '--latest', '--database', APP_DB, '--target-url', dbUrl(RESTORED_DB, APP_ROLE)],
      { ...inEnv(), ...toS3() },
    );
    expect(restore.code, restore.out).toBe(0);
    const check = new pg.Client({ connectionString: dbUrl(RESTORED_DB, APP_ROLE, SECRETS.DB_PASSWORD) });
    await check.connect();
    expect((await check.query('SELECT count(*)::int AS n FROM users')).rows[0]).toEqual({ n: 3000 });
    await check.end();

    const v1 = await cli('verify (S3, VERIFY_DATABASE_URL with password)', ['verify'], {
      ...inUrl(),
      ...toS3(),
    });
    expect(v1.code, v1.out).toBe(0);

    const custom = { BACKUP_FORMAT: 'custom' };
    const b2 = await cli('backup (folder, custom, PGPASSWORD)', ['backup'], {
      ...inEnv(),
      ...toDir(),
      ...custom,
    });
    expect(b2.code, b2.out).toBe(0);
    const v2 = await cli('verify (folder, custom: pg_restore, pretty log)', ['verify'], {
      ...inEnv(),
      ...toDir(),
      ...custom,
      LOG_FORMAT: 'pretty',
    });
    expect(v2.code, v2.out).toBe(0);
    expect(v2.out).not.toMatch(/^\{"level"/m); // it really was the pretty format
    const ls2 = await cli('backups list (folder)', ['backups', 'list'], { ...inEnv(), ...toDir() });
    expect(ls2.code, ls2.out).toBe(0);
    expect(ls2.out).toMatch(/ok \d{4}-/); // the drill's record is there

    const doc = await cli('doctor', ['doctor'], inEnv());
    expect([EXIT.OK, EXIT.FAILURE]).toContain(doc.code);
    const docj = await cli('doctor --json', ['doctor', '--json'], inUrl());
    expect([EXIT.OK, EXIT.FAILURE]).toContain(docj.code);

    // the status summary names the database target and the store: never with their secrets
    const stat = await cli('status (S3, password in URL)', ['status'], { ...inUrl(), ...toS3() });
    expect(stat.code, stat.out).toBe(EXIT.OK);
    expect(stat.out).toContain('pg_up 1');
    const statj = await cli('status --json (folder, PGPASSWORD)', ['status', '--json'], {
      ...inEnv(),
      ...toDir(),
    });
    expect(statj.code, statj.out).toBe(EXIT.OK);
  }, 240_000); // a dozen CLI runs each: generous on a busy machine

  it('encrypted backups: check-config shows recipients and the identity path only; backup, list, restore, verify; a wrong identity is refused', async () => {
    // the writer holds public keys only; the reader the identity file
    const writer = { BACKUP_ENCRYPTION_RECIPIENTS: AGE.recipient };
    const reader = { ...writer, BACKUP_ENCRYPTION_IDENTITY_FILE: AGE.file };
    const cc = await cli('check-config (encryption)', ['check-config', '--json'], {
      ...inEnv(),
      BACKUP_DIR: encDir,
      ...reader,
    });
    expect(cc.code, cc.out).toBe(0);
    expect(cc.out).toContain(AGE.recipient);
    expect(cc.out).toContain(AGE.file); // the path, not what it holds
    const b = await cli('backup (folder, encrypted)', ['backup'], {
      ...inEnv(),
      BACKUP_DIR: encDir,
      ...writer,
    });
    expect(b.code, b.out).toBe(0);
    expect(b.out).toMatch(/\.sql\.gz\.age/);
    const bs3 = await cli('backup (S3, encrypted, password in URL)', ['backup'], {
      ...inUrl(),
      ...toS3(),
      ...writer,
    });
    expect(bs3.code, bs3.out).toBe(0);
    // S3 now holds a plain backup (the earlier test's) and an encrypted one
    const ls = await cli('backups list (S3, plain and encrypted)', ['backups', 'list'], {
      ...inEnv(),
      ...toS3(),
      ...reader,
    });
    expect(ls.code, ls.out).toBe(0);
    expect(ls.out).toMatch(/age: age1/);
    expect(ls.out).toMatch(/ none /);
    const wrong = await cli(
      'restore (wrong identity)',
      ['restore', '--latest', '--database', APP_DB, '--target-url', dbUrl(ENC_RESTORED_DB, APP_ROLE)],
      { ...inEnv(), BACKUP_DIR: encDir, ...writer, BACKUP_ENCRYPTION_IDENTITY_FILE: WRONG_AGE.file },
    );
    expect(wrong.code).toBe(EXIT.DATAERR);
    expect(wrong.out).toContain(AGE.recipient);
    const restore = await cli(
      'restore (folder, encrypted, with the identity)',
      ['restore', '--latest', '--database', APP_DB, '--target-url', dbUrl(ENC_RESTORED_DB, APP_ROLE)],
      { ...inEnv(), BACKUP_DIR: encDir, ...reader },
    );
    expect(restore.code, restore.out).toBe(0);
    const v = await cli('verify (S3, encrypted, with the identity)', ['verify'], {
      ...inUrl(),
      ...toS3(),
      ...reader,
    });
    expect(v.code, v.out).toBe(0);
  }, 240_000); // a dozen CLI runs each: generous on a busy machine

  it('the daemon: a scheduled backup, /metrics (bearer token, basic auth, wrong ones), the status page, /healthz and /readyz', async () => {
    // pg_stat_statements in the daemon's database, for this test only; its view shows the whole
    // server's statements. A password set again (the same one), often enough that the entry is not
    // the first evicted while other test files fill the view: it is kept as written, literal and all
    const admin = new pg.Client({ connectionString: withDatabase(adminUrl(), APP_DB) });
    await admin.connect();
    await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    for (let i = 0; i < 20; i++)
      await admin.query(`ALTER ROLE ${VERIFY_ROLE} PASSWORD '${SECRETS.VERIFY_PASSWORD}'`);
    const d = spawnCli(['run'], {
      ...inUrl(),
      ...toS3(),
      ...webFiles(),
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      BACKUP_SCHEDULE: '*/2 * * * * *',
      METRICS_INTERVAL: '1s',
      METRICS_QUERY_TEXT: 'true',
      METRICS_STATEMENTS_LIMIT: '10000', // every statement, the CREATE ROLEs with passwords included
    });
    const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
    const basic = (password: string) => ({ headers: { authorization: basicHeader(password) } });
    try {
      const listening = await d.waitForLog((l) => l.msg === 'http server listening');
      const baseUrl = `http://127.0.0.1:${(listening.address as { port: number }).port}`;
      await d.waitForLog((l) => l.msg === 'backup complete', 30_000);
      await waitFor(
        async () => (await scrape('daemon (bearer)', `${baseUrl}/metrics`, bearer(WEB.BEARER_TOKEN))).body,
        (t) => /^pg_up 1$/m.test(t) && /pgmaintd_backup_runs_total\{[^}]*result="success"/.test(t),
        20_000,
        250,
      );
      expect((await scrape('daemon (basic)', `${baseUrl}/metrics`, basic(WEB.BASIC_PASSWORD))).status).toBe(
        200,
      );
      // that statement is exported, its password masked
      await waitFor(
        async () => (await scrape('daemon (bearer)', `${baseUrl}/metrics`, bearer(WEB.BEARER_TOKEN))).body,
        (t) =>
          new RegExp(
            `^pg_stat_statements_query_id\\{[^}]*query="ALTER ROLE ${VERIFY_ROLE} PASSWORD \\?"`,
            'm',
          ).test(t),
        20_000,
        250,
      );
      for (const [label, init] of [
        ['wrong bearer token', bearer(WEB.WRONG_BEARER_TOKEN)],
        ['wrong basic-auth password', basic(WEB.WRONG_BASIC_PASSWORD)],
        ['no credentials', undefined],
      ] as const) {
        const r = await scrape(`daemon (${label})`, `${baseUrl}/metrics`, init);
        expect(r.status, label).toBe(401);
      }
      // the landing page and its JSON show the target, the store and collector errors
      for (const path of ['/', '/status']) {
        const r = await scrape('daemon (bearer)', `${baseUrl}${path}`, bearer(WEB.BEARER_TOKEN));
        expect(r.status, path).toBe(200);
        expect(r.body, path).toContain(APP_DB);
      }
      for (const path of ['/healthz', '/readyz', '/nowhere']) {
        const r = await scrape('daemon', `${baseUrl}${path}`, bearer(WEB.WRONG_BEARER_TOKEN));
        if (path !== '/nowhere') expect(r.status, r.body).toBe(200); // probes stay open
      }
    } finally {
      d.child.kill('SIGTERM');
      const { code } = await d.exited;
      capture('daemon run (password in URL, S3, scheduled backup, web auth)', d);
      runs.push({ label: 'daemon', code });
      await admin.query('DROP EXTENSION IF EXISTS pg_stat_statements').catch(() => undefined);
      await admin.end();
    }
  });

  it('faults: wrong password, unreachable S3, killed pg_dump, invalid config, S3 403', async () => {
    // a wrong password: in the URL, and in PGPASSWORD
    const wrongUrl = {
      ...inUrl(),
      DATABASE_URL: `postgresql://${APP_ROLE}:${SECRETS.WRONG_DB_PASSWORD}@127.0.0.1:${port()}/${APP_DB}`,
    };
    const w1 = await cli('backup (wrong password in URL)', ['backup'], { ...wrongUrl, ...toDir() });
    expect(w1.code, w1.out).not.toBe(0);
    expect(w1.out).toMatch(/password authentication failed|auth/i);
    const w2 = await cli('migrate up (wrong PGPASSWORD)', ['migrate', 'up'], {
      ...inEnv(),
      PGPASSWORD: SECRETS.WRONG_DB_PASSWORD,
    });
    expect(w2.code, w2.out).not.toBe(0);
    const w3 = await cli('verify (wrong VERIFY_DATABASE_URL password)', ['verify'], {
      ...inUrl(),
      ...toDir(),
      VERIFY_DATABASE_URL: dbUrl('postgres', VERIFY_ROLE, SECRETS.WRONG_DB_PASSWORD),
    });
    expect(w3.code, w3.out).not.toBe(0);
    const daemon = spawnCli(['run'], {
      ...wrongUrl,
      ...toDir(),
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      READYZ_INTERVAL: '500ms',
      METRICS_INTERVAL: '1s',
    });
    try {
      const listening = await daemon.waitForLog((l) => l.msg === 'http server listening');
      const baseUrl = `http://127.0.0.1:${(listening.address as { port: number }).port}`;
      await waitFor(
        async () => scrape('daemon (wrong password)', `${baseUrl}/readyz`),
        (r) => r.status === 503 && /auth|password/i.test(r.body),
        15_000,
        250,
      );
      await scrape('daemon (wrong password)', `${baseUrl}/metrics`);
      await scrape('daemon (wrong password)', `${baseUrl}/healthz`);
    } finally {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
      capture('daemon run (wrong password)', daemon);
    }

    // an unreachable S3 endpoint
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const u1 = await cli('backup (S3 unreachable)', ['backup'], {
      ...inUrl(),
      ...toS3(SECRETS.S3_SECRET, nowhere),
    });
    expect(u1.code, u1.out).not.toBe(0);
    const u2 = await cli('backups list (S3 unreachable)', ['backups', 'list'], {
      ...inUrl(),
      ...toS3(SECRETS.S3_SECRET, nowhere),
    });
    expect(u2.code, u2.out).not.toBe(0);

    // S3 answers 403: the wrong secret must not be printed either
    const refusedBefore = proxy.stats.refused.SignatureDoesNotMatch ?? 0;
    const f1 = await cli('backup (S3 403, wrong secret)', ['backup'], {
      ...inUrl(),
      ...toS3(SECRETS.WRONG_S3_SECRET),
    });
    expect(f1.code, f1.out).not.toBe(0);
    const f2 = await cli('backups list (S3 403, wrong secret)', ['backups', 'list'], {
      ...inEnv(),
      ...toS3(SECRETS.WRONG_S3_SECRET),
    });
    expect(f2.code, f2.out).not.toBe(0);
    expect(proxy.stats.refused.SignatureDoesNotMatch ?? 0).toBeGreaterThan(refusedBefore);

    // pg_dump killed (kill -9) mid-stream
    const killed = spawnCli(['backup', '--database', BULK_DB], {
      ...inEnv(),
      ...toDir(),
      BACKUP_COMPRESSION_LEVEL: '9',
      BACKUP_COMPRESSION_THREADS: '1',
    });
    const pid = await waitFor(
      async () => {
        sampler.sample();
        return bulkDumpPid;
      },
      (p) => p !== undefined,
      20_000,
      20,
    );
    // mid-stream, not at its start: compressed bytes have reached the temporary file
    await waitFor(
      async () => {
        sampler.sample();
        const sub = join(backupDir, BULK_DB);
        const names = existsSync(sub) ? readdirSync(sub) : [];
        // a file renamed meanwhile has no size: the next look finds the next one
        return names.some(
          (n) =>
            n.includes(PARTIAL_MARK) && (statSync(join(sub, n), { throwIfNoEntry: false })?.size ?? 0) > 0,
        );
      },
      (writing) => writing,
      20_000,
      20,
    );
    sampler.sample();
    process.kill(pid!, 'SIGKILL');
    const { code } = await killed.exited;
    capture('backup (pg_dump killed)', killed);
    expect(code, killed.output()).toBe(EXIT.FAILURE);
    expect(killed.output()).toMatch(/SIGKILL/);

    // an invalid configuration whose URL carries a password (and another bad setting besides)
    const badUrl = `postgres://u:${SECRETS.BAD_URL_PASSWORD}@host:notaport/db`;
    const badVerify = `postgresql://v:${encodeURIComponent(SECRETS.BAD_URL_PASSWORD)}@h:99999999/x`;
    for (const args of [['check-config'], ['run'], ['backup'], ['verify']]) {
      const r = await cli(`${args[0]} (invalid DATABASE_URL with a password)`, args, {
        ...base(),
        DATABASE_URL: badUrl,
        DB_POOL_MAX: 'lots',
      });
      expect(r.code, r.out).toBe(EXIT.CONFIG);
      expect(r.out).toMatch(/DATABASE_URL/);
    }
    writeFileSync(urlFile, `${badUrl}\n`, { mode: 0o600 });
    const badFile = await cli('check-config (DATABASE_URL_FILE holding an invalid URL)', ['check-config'], {
      ...base(),
      DATABASE_URL_FILE: urlFile,
    });
    expect(badFile.code, badFile.out).toBe(EXIT.CONFIG);
    const configFile = join(secretsDir, 'bad-config.yaml');
    writeFileSync(configFile, `DATABASE_URL: "${badUrl}"\nVERIFY_DATABASE_URL: "${badVerify}"\n`, {
      mode: 0o600,
    });
    const fromFile = await cli(
      'check-config --config (invalid URLs in a file)',
      ['check-config', '--config', configFile],
      {
        DB_SSL_MODE: 'disable',
      },
    );
    expect(fromFile.code, fromFile.out).toBe(EXIT.CONFIG);
  }, 240_000); // a dozen CLI runs each: generous on a busy machine

  it('nothing anywhere holds a secret: outputs, logs, HTTP bodies, command lines, manifests, drill records', async () => {
    sampler.sample();
    sampler.stop();

    // the stores: manifests, drill records, and anything else that is not the dump itself
    const local = scanFiles('backup folder', backupDir);
    // the encrypted dumps are scanned too: ciphertext, manifests naming only public keys
    const encrypted = scanFiles('encrypted backup folder', encDir);
    expect(encrypted.some((f) => f.endsWith('.sql.gz.age'))).toBe(true);
    expect(local.some((f) => f.endsWith('.manifest.json'))).toBe(true);
    expect(local.some((f) => /\.verify-[^/]+\.json$/.test(f))).toBe(true);
    const inBucket = scanFiles('s3rver store', s3dir);
    expect(inBucket.length).toBeGreaterThan(0);
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const jsonKeys = (listed.Contents ?? []).map((o) => o.Key!).filter((k) => k.endsWith('.json'));
    expect(jsonKeys.some((k) => k.endsWith('.manifest.json'))).toBe(true);
    expect(jsonKeys.some((k) => /\.verify-[^/]+\.json$/.test(k))).toBe(true);
    for (const key of jsonKeys) {
      const obj = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      scanner.capture(`bucket object ${key}`, await obj.Body!.transformToString());
    }

    // every command line seen on the machine while all of the above ran
    for (const c of sampler.cmdlines) scanner.capture('a process command line', c);

    // the sampler saw the client programs, so it was not scanning nothing
    const comms = new Set(clients.map((c) => c.comm));
    expect([...comms].sort()).toEqual(['pg_dump', 'pg_restore', 'psql']);
    expect(clients.some((c) => c.comm === 'psql' && c.env.get('PGUSER') === VERIFY_ROLE)).toBe(true);
    // The README: "pg_dump, pg_restore and psql get the password through their environment, never in
    // their arguments". The environment of a process is readable by its own user only (0400).
    for (const c of clients) {
      const expected = c.env.get('PGUSER') === VERIFY_ROLE ? SECRETS.VERIFY_PASSWORD : SECRETS.DB_PASSWORD;
      expect(c.env.get('PGPASSWORD'), `${c.comm} ${c.pid}`).toBe(expected);
      expect(c.environMode, `${c.comm} ${c.pid}`).toBe(0o400);
      expect(c.environUid).toBe(process.getuid!());
      // and only its own: no other secret (the S3 key above all) is handed to a client program
      const others = [
        ...Object.values(SECRETS),
        ...Object.values(WEB),
        AGE.identity,
        WRONG_AGE.identity,
      ].filter((v) => v !== expected);
      const environ = [...c.env].map(([k, v]) => `${k}=${v}`).join('\n');
      for (const other of others) expect(environ.includes(other), `${c.comm} ${c.pid}`).toBe(false);
    }

    if (process.env.SECRET_SCAN_DUMP) writeFileSync(process.env.SECRET_SCAN_DUMP, scanner.dump());
    const leaks = scanner.leaks();
    const summary = {
      processesSeen: sampler.seen.length,
      distinctCmdlines: sampler.cmdlines.size,
      sweeps: sampler.sweeps,
      clientPrograms: clients
        .map((c) => c.comm)
        .reduce<Record<string, number>>((m, c) => ({ ...m, [c]: (m[c] ?? 0) + 1 }), {}),
      textsScanned: scanner.sources,
      bytesScanned: scanner.bytes,
      commands: runs.map((r) => `${r.label}: exit ${r.code}`),
    };
    console.log(`secret scan: ${JSON.stringify(summary, null, 2)}`);
    expect(leaks, JSON.stringify(leaks.slice(0, 20), null, 2)).toEqual([]);
  });
});
