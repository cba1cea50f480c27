/**
 * `pitr restore`: a base backup and the WAL after it into an empty directory, set up to recover to a
 * target, and with --start started and followed until recovery ends. The data object streams from
 * the store through a SHA-256 check and gunzip into tar, with no temporary copy; pg_verifybackup
 * then checks every file against PostgreSQL's own manifest. Until it is done the directory holds
 * PGMAINTD_RESTORE_INCOMPLETE: an interrupted or failed restore is never taken for a good one.
 */
import { spawn } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { mkdir, open, readdir, rm, writeFile, chmod } from 'node:fs/promises';
import { resolve as resolvePath, join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ChecksumVerifier } from '../backup/checksum.js';
import { IdentityError, decryptStream, readIdentities } from '../backup/encryption.js';
import { ByteCounter } from '../backup/hash.js';
import type { Signer } from '../backup/signing.js';
import type { Storage } from '../backup/storage/storage.js';
import { PACKAGE_ROOT, type Config } from '../config/load.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import { debianToolAtLeast, toolPath } from '../programs/client-tools.js';
import { findServerBinaries } from '../programs/server-binaries.js';
import { parseDatabaseUrl } from '../core/database-url.js';
import type { BaseManifest } from './base-manifest.js';
import { listPitr, loadHistories, type PitrListing, type WalObject } from './pitr-catalog.js';
import { fetchWalFile } from './wal-object.js';
import { Prefetcher } from './prefetch.js';
import { freePort } from '../core/free-port.js';
import { RecoveryServer, checkServerDataDir, serverOwner } from './recovery-server.js';
import { planRestore, type RestoreTarget } from './restore-plan.js';
import { writeFileNoFollow } from './safe-write.js';
import { TarGuard, TarGuardError } from './tar-guard.js';
import { formatLsn, parseWalFileName } from './wal-name.js';

export const INCOMPLETE_MARKER = 'PGMAINTD_RESTORE_INCOMPLETE';
export const RESTORE_CONFIG_FILE = 'pgmaintd-restore.json';

export interface PitrDeps {
  config: Config;
  storage: Storage;
  signer?: Signer | undefined;
  logger: Logger;
}

export interface PitrRestoreOptions {
  dataDir: string;
  sysid: string;
  target: RestoreTarget;
  pause?: boolean;
  start?: boolean;
  port?: number;
  signal: AbortSignal;
  /** Leave the started server running when done (the command); a drill stops it itself. */
  job?: string;
}

export interface PitrRestoreResult {
  dataDir: string;
  baseKey: string;
  timeline: number;
  server?: RecoveryServer;
  prefetched: number;
}

export async function restorePitr(deps: PitrDeps, o: PitrRestoreOptions): Promise<PitrRestoreResult> {
  const dataDir = resolvePath(o.dataDir);
  const log = deps.logger.child({ job: o.job ?? 'pitr-restore', dataDir });
  if (existsSync(dataDir) && (await readdir(dataDir)).length > 0)
    throw new OperatorError(
      `--data-dir ${dataDir} is not empty: a restore writes only into an empty directory`,
      {
        exitCode: EXIT.USAGE,
        hint: 'give a new or empty directory; nothing was written',
      },
    );
  if (o.start) checkServerDataDir(dataDir);
  const listing = await listPitr(deps.storage, o.sysid, { signer: deps.signer });
  const histories = await loadHistories(deps.storage, listing, { signer: deps.signer });
  const plan = planRestore(listing, histories, o.target);
  const m = plan.base.manifest;
  log.info(
    {
      base: plan.base.key,
      startLsn: m.startLsn,
      stopLsn: m.stopLsn,
      consistentAt: m.stopDatabaseTime,
      timeline: plan.timeline,
    },
    'restoring from this base backup',
  );
  const owner = o.start ? serverOwner() : undefined;
  const binaries = o.start
    ? deps.config.pitr.serverBinDir
      ? {
          binDir: deps.config.pitr.serverBinDir,
          major: Math.floor(m.serverVersionNum / 10000),
          source: 'PG_SERVER_BIN_DIR',
        }
      : findServerBinaries(Math.floor(m.serverVersionNum / 10000))
    : undefined;
  // an encrypted base backup (or WAL) is opened, and the identity checked against it, before
  // anything is written: a missing or wrong identity leaves --data-dir as it was
  const identityFile = deps.config.backup.encryption.identityFile;
  if (m.encryption) (await openBase(deps, plan.base.key, m, identityFile, o.signal)).destroy();
  await checkWalIdentity(deps, listing, plan.base.manifest, identityFile, o.signal);
  // opened again right before it is read: one left unread through the WAL check ended early
  // ("premature close") against a directory store
  const source = await openBase(deps, plan.base.key, m, identityFile, o.signal);
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await chmod(dataDir, 0o700);
  } catch (err) {
    source.destroy();
    throw err;
  }
  await writeFile(
    join(dataDir, INCOMPLETE_MARKER),
    `pg-maintd restore of ${plan.base.key} in progress or interrupted: delete this directory\n`,
  );
  let server: RecoveryServer | undefined;
  let prefetcher: Prefetcher | undefined;
  try {
    await extract(source, plan.base.key, m.rawBytes, dataDir, o.signal, log);
    await verifyBackup(verifierPath(deps.config, binaries?.binDir, m.serverVersionNum), dataDir, o.signal);
    await writeRecoverySettings(deps.config, dataDir, o.target, o.pause === true);
    if (!o.start || !binaries) {
      if (owner) await run('chown', ['-R', '-P', `${owner.uid}:${owner.gid}`, dataDir], o.signal);
      await rm(join(dataDir, INCOMPLETE_MARKER));
      return { dataDir, baseKey: plan.base.key, timeline: plan.timeline, prefetched: 0 };
    }
    // everything root writes into the data directory is written before it is handed to the
    // server's user: after the chown, a link planted there could steer root's writes
    const logFile = join(dataDir, 'log', 'pgmaintd-restore.log');
    await mkdir(join(dataDir, 'log'), { recursive: true });
    // this process decrypts: the server's user never reads the identity, it gets verified plain WAL
    prefetcher = new Prefetcher(
      dataDir,
      { storage: deps.storage, sysid: o.sysid, signer: deps.signer, identityFile },
      log,
      owner,
      m.segmentBytes,
    );
    await prefetcher.start();
    if (owner) await run('chown', ['-R', '-P', `${owner.uid}:${owner.gid}`, dataDir], o.signal);
    const port = o.port ?? (await freePort());
    const login = parseDatabaseUrl(deps.config.db.url);
    server = new RecoveryServer({
      dataDir,
      port,
      binaries,
      owner,
      logFile,
      login,
      systemIdentifier: m.systemIdentifier,
    });
    await server.start();
    log.info({ port, logFile }, 'restored server started; replaying WAL');
    await server.waitForRecovery(o.pause ? 'pause' : 'promote', o.signal, (lsn) =>
      log.info({ replayLsn: lsn, walFilesFetched: prefetcher?.fetched }, 'replaying WAL'),
    );
    await prefetcher.stop();
    await rm(join(dataDir, INCOMPLETE_MARKER));
    log.info(
      { port, walFilesFetched: prefetcher.fetched },
      o.pause ? 'recovery paused at the target' : 'recovery complete; the server is promoted',
    );
    return {
      dataDir,
      baseKey: plan.base.key,
      timeline: plan.timeline,
      server,
      prefetched: prefetcher.fetched,
    };
  } catch (err) {
    await server?.stop('immediate').catch(() => undefined);
    await prefetcher?.stop().catch(() => undefined);
    if (o.signal.aborted) {
      const sig = /SIGINT/.test(errorMessage(o.signal.reason)) ? 'SIGINT' : 'SIGTERM';
      throw new OperatorError(
        `pitr restore interrupted by ${sig}: ${dataDir} is incomplete (marked ${INCOMPLETE_MARKER}), the server stopped`,
        {
          exitCode: sig === 'SIGINT' ? EXIT.FORCED_SIGINT : EXIT.FORCED_SIGTERM,
          hint: `delete ${dataDir} and run the restore again`,
          cause: err,
        },
      );
    }
    if (err instanceof OperatorError)
      throw new OperatorError(err.message, {
        exitCode: err.exitCode,
        hint: `${err.hint ? `${err.hint}; ` : ''}${dataDir} is incomplete (marked ${INCOMPLETE_MARKER}): delete it`,
        cause: err,
      });
    throw err;
  }
}

/**
 * The base backup's gzip stream: the stored bytes through their SHA-256 check, then, if encrypted,
 * age. Decryption begins here, so a missing or wrong identity is an error before any write.
 */
async function openBase(
  deps: PitrDeps,
  key: string,
  m: BaseManifest,
  identityFile: string | undefined,
  signal: AbortSignal,
): Promise<Readable> {
  const identities = m.encryption ? identitiesFor(identityFile, key, m.encryption.recipients) : undefined;
  const stored = await deps.storage.getStream(key, signal);
  const verifier = new ChecksumVerifier(m.sha256, key);
  const verified = pipeline(stored, verifier, () => undefined);
  if (!identities) return verified;
  return decryptStream(verified, identities, `base backup ${key}`, m.encryption!.recipients);
}

function identitiesFor(identityFile: string | undefined, what: string, recipients: string[]): string[] {
  try {
    return readIdentities(identityFile);
  } catch (err) {
    const e = err as OperatorError;
    throw new IdentityError(`${what} is encrypted to ${recipients.join(', ')}: ${e.message}`, {
      exitCode: e.exitCode,
      hint: `${e.hint ?? ''}; nothing was written`,
    });
  }
}

/**
 * WAL stored encrypted after the base backup (encryption turned on after it, or the base is
 * encrypted too): the identity must open it, checked on the first such object before any write.
 */
async function checkWalIdentity(
  deps: PitrDeps,
  listing: PitrListing,
  m: BaseManifest,
  identityFile: string | undefined,
  signal: AbortSignal,
): Promise<void> {
  const from = parseWalFileName(m.startWalFile, m.segmentBytes);
  if (from?.kind !== 'segment') return;
  let first: WalObject | undefined;
  for (const [tl, segs] of listing.segments) {
    if (tl < m.timeline) continue;
    for (const [segNo, w] of segs)
      if (w.storedTag && segNo >= from.segNo && (!first || w.file.name < first.file.name)) first = w;
  }
  for (const list of listing.partials.values())
    for (const w of list) if (!first && w.storedTag && w.file.timeline >= m.timeline) first = w;
  if (!first) return;
  identitiesFor(identityFile, `WAL after this base backup (${first.key})`, m.encryption?.recipients ?? []);
  const ws = { storage: deps.storage, sysid: listing.sysid, signer: deps.signer, identityFile };
  try {
    await fetchWalFile({ ...ws, segmentBytes: m.segmentBytes }, first, signal);
  } catch (err) {
    // a damaged object is recovery's to meet (another copy may serve); the identity is this check's
    if (err instanceof OperatorError && / is corrupt: /.test(err.message)) return;
    throw err;
  }
}

async function extract(
  source: Readable,
  key: string,
  rawBytes: number,
  dataDir: string,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  const counter = new ByteCounter();
  const guard = new TarGuard();
  // ownership and modes are not the archive's to choose: root extracts, chown -R hands it over
  const tarArgs = ['-x', '-f', '-', '-C', dataDir, '--no-same-owner', '--no-same-permissions'];
  const tar = spawn('tar', [...tarArgs, '--delay-directory-restore'], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const onAbort = () => tar.kill('SIGKILL');
  signal.addEventListener('abort', onAbort, { once: true });
  const progress = setInterval(
    () => log.info({ bytes: counter.bytes, of: rawBytes }, 'extracting the base backup'),
    5000,
  );
  progress.unref();
  try {
    const exited = new Promise<void>((resolve, reject) =>
      tar.on('close', (code, sig) =>
        code === 0
          ? resolve()
          : reject(
              new OperatorError(
                `tar ${sig ? `was killed by ${sig}` : `exited with ${code}`}: ${stderr.trim()}`,
              ),
            ),
      ),
    );
    const piped = new Promise<void>((resolve, reject) =>
      pipeline(source, createGunzip(), counter, guard, tar.stdin, (err) => (err ? reject(err) : resolve())),
    );
    const [p, e] = await Promise.allSettled([piped, exited]);
    // the checksum's verdict first: tar failing on a corrupt stream is its symptom
    if (p.status === 'rejected') {
      tar.kill('SIGKILL');
      if (p.reason instanceof TarGuardError)
        throw new OperatorError(`refusing the base backup ${key}: ${p.reason.message}`, {
          exitCode: EXIT.DATAERR,
          hint: 'the base backup is not what pg_basebackup writes (damaged or tampered with): restore from another one (`pg-maintd pitr list`)',
        });
      throw p.reason;
    }
    if (e.status === 'rejected') throw e.reason;
  } finally {
    clearInterval(progress);
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * pg_verifybackup: PG_CLIENT_BIN_DIR's, the server binaries', Debian's of the server's major or a
 * newer one (a newer pg_verifybackup reads older manifests; Debian puts no wrapper on the PATH), or
 * the PATH's.
 */
function verifierPath(config: Config, serverBinDir: string | undefined, serverVersionNum: number): string {
  if (config.backup.clientBinDir) return toolPath('pg_verifybackup', config.backup.clientBinDir);
  for (const dir of [serverBinDir, config.pitr.serverBinDir])
    if (dir && existsSync(join(dir, 'pg_verifybackup'))) return join(dir, 'pg_verifybackup');
  const major = Math.floor(serverVersionNum / 10000);
  try {
    const dir = findServerBinaries(major).binDir;
    if (existsSync(join(dir, 'pg_verifybackup'))) return join(dir, 'pg_verifybackup');
  } catch {
    // not installed here: a newer Debian client's, or the PATH's
  }
  return debianToolAtLeast('pg_verifybackup', major) ?? 'pg_verifybackup';
}

async function verifyBackup(path: string, dataDir: string, signal: AbortSignal): Promise<void> {
  try {
    await run(path, ['--no-parse-wal', '-q', '-i', INCOMPLETE_MARKER, dataDir], signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new OperatorError(`cannot check the restored files: ${path} not found`, {
        exitCode: EXIT.UNAVAILABLE,
        hint: 'install the PostgreSQL client of the server’s major version (pg_verifybackup), or set PG_CLIENT_BIN_DIR',
      });
    if (signal.aborted) throw err;
    throw new OperatorError(
      `the restored files do not match the base backup's manifest: ${errorMessage(err)}`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'the base backup is damaged: restore from another one (`pg-maintd pitr list`)',
      },
    );
  }
}

const SAFE_PATH = /^[A-Za-z0-9_./+-]+$/;

/**
 * PostgreSQL's recovery_target_time check refuses the ISO "T...Z" form: "YYYY-MM-DD hh:mm:ss.ssssss+00",
 * to the microsecond PostgreSQL keeps (a Date holds milliseconds; `micros` the rest).
 */
export function recoveryTime(time: Date, micros = 0): string {
  const us = Math.min(999, Math.max(0, Math.trunc(micros)));
  return time
    .toISOString()
    .replace('T', ' ')
    .replace('Z', `${String(us).padStart(3, '0')}+00`);
}

/** restore_command and the recovery target in postgresql.auto.conf, recovery.signal, and wal-fetch's settings. */
async function writeRecoverySettings(
  config: Config,
  dataDir: string,
  target: RestoreTarget,
  pause: boolean,
): Promise<void> {
  const script = join(PACKAGE_ROOT, 'bin', 'pg-maintd.js');
  for (const p of [process.execPath, script])
    if (!SAFE_PATH.test(p))
      throw new OperatorError(
        `cannot write a restore_command for ${p}: its path has characters a shell command line would need quoted`,
        {
          hint: 'install node and pg-maintd under plain paths',
        },
      );
  // only what wal-fetch needs to find and check WAL, none of it secret (S3 credentials come from the
  // environment of whoever starts the server, as for pg-maintd itself)
  const settings: Record<string, string | boolean> = { LOG_LEVEL: 'warn' };
  if (config.s3.bucket) {
    settings.S3_BUCKET = config.s3.bucket;
    if (config.s3.prefix) settings.S3_PREFIX = config.s3.prefix;
    if (config.s3.region) settings.S3_REGION = config.s3.region;
    if (config.s3.endpoint) settings.S3_ENDPOINT = config.s3.endpoint;
    if (config.s3.forcePathStyle !== undefined) settings.S3_FORCE_PATH_STYLE = config.s3.forcePathStyle;
  } else settings.BACKUP_DIR = resolvePath(config.backup.dir);
  if (config.backup.signingKeyFile) settings.BACKUP_SIGNING_KEY_FILE = config.backup.signingKeyFile;
  // the extracted files are not trusted yet: none of these writes follows a link
  await writeFileNoFollow(join(dataDir, RESTORE_CONFIG_FILE), `${JSON.stringify(settings, null, 2)}\n`, {
    mode: 0o600,
  });
  const q = (v: string) => `'${v.replace(/'/g, "''")}'`;
  const lines = [
    '# pg-maintd pitr restore',
    `restore_command = ${q(`${process.execPath} ${script} wal-fetch %f %p --config ${RESTORE_CONFIG_FILE}`)}`,
    "recovery_target_timeline = 'latest'",
    // a restored copy must not archive into the store of the cluster it was restored from
    "archive_mode = 'off'",
  ];
  if (target.kind === 'time')
    lines.push(`recovery_target_time = ${q(recoveryTime(target.time, target.micros))}`);
  if (target.kind === 'lsn') lines.push(`recovery_target_lsn = ${q(formatLsn(target.lsn))}`);
  if (target.kind === 'name') lines.push(`recovery_target_name = ${q(target.name)}`);
  if (target.kind !== 'latest') lines.push(`recovery_target_action = ${q(pause ? 'pause' : 'promote')}`);
  const autoConf = join(dataDir, 'postgresql.auto.conf');
  const before = await readNoFollow(autoConf);
  await writeFileNoFollow(autoConf, `${before}\n${lines.join('\n')}\n`, { mode: 0o600 });
  await writeFileNoFollow(join(dataDir, 'recovery.signal'), '', { mode: 0o600 });
}

/** A regular file's text ('' when there is none); a link or special file is refused, not read. */
async function readNoFollow(path: string): Promise<string> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return '';
    if (code === 'ELOOP')
      throw new OperatorError(`refusing to read ${path}: the base backup made it a symbolic link`, {
        exitCode: EXIT.DATAERR,
        hint: 'restore from another base backup (`pg-maintd pitr list`)',
      });
    throw err;
  }
  try {
    if (!(await fh.stat()).isFile())
      throw new OperatorError(`refusing to read ${path}: it is not a regular file`, {
        exitCode: EXIT.DATAERR,
        hint: 'restore from another base backup (`pg-maintd pitr list`)',
      });
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

function run(cmd: string, args: string[], signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}: ${out.trim().slice(-1500)}`)),
    );
  });
}
