/**
 * A PostgreSQL server started on a restored data directory, on a loopback port, as the data
 * directory's owner (PostgreSQL refuses to run as root: as root, the `postgres` OS user), until its
 * recovery ends: promoted (pg_is_in_recovery() false) or paused at the target. A server that stops
 * on its own during recovery failed it: the message is the tail of its log, where restore_command's
 * reasons are.
 */
import { spawn } from 'node:child_process';
import { constants, existsSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { ConnectionTarget } from '../core/database-url.js';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { ServerBinaries } from '../programs/server-binaries.js';
import type { Owner } from './prefetch.js';
import { writeFileNoFollow } from './safe-write.js';

/** The pg_hba.conf a restore's start uses, beside the cluster's own (see #restoreHba). */
export const RESTORE_HBA_FILE = 'pgmaintd-restore-hba.conf';

export interface RecoveryServerOptions {
  dataDir: string;
  port: number;
  binaries: ServerBinaries;
  owner?: Owner | undefined;
  logFile: string;
  /** Who connects to ask how recovery goes: the role (and password) of DATABASE_URL. */
  login: Pick<ConnectionTarget, 'user' | 'password' | 'database'>;
  /** The base backup's cluster: the server pg-maintd talks to must be this one. */
  systemIdentifier: string;
}

/** Characters a data directory path may hold to go through pg_ctl -o (a shell command line) as is. */
const SAFE_DIR = /^\/[A-Za-z0-9_./+-]+$/;
/** sun_path holds 108 bytes with its NUL; the socket is `<dir>/.s.PGSQL.<port>`. */
const MAX_SOCKET_DIR = 107 - '/.s.PGSQL.65535'.length;

/** Refuses a data directory the server cannot be started on safely, before anything is written. */
export function checkServerDataDir(dataDir: string): void {
  if (!SAFE_DIR.test(dataDir))
    throw new OperatorError(
      `cannot start a server on ${JSON.stringify(dataDir)}: its path has characters outside A-Z a-z 0-9 _ . / + - (pg_ctl passes it through a shell)`,
      { exitCode: EXIT.USAGE, hint: 'give --data-dir a plain path; nothing was written' },
    );
  if (Buffer.byteLength(dataDir) > MAX_SOCKET_DIR)
    throw new OperatorError(
      `cannot start a server on ${dataDir}: its Unix socket, in the data directory, needs a path of at most ${MAX_SOCKET_DIR} bytes`,
      { exitCode: EXIT.USAGE, hint: 'give --data-dir a shorter path; nothing was written' },
    );
}

/** The `postgres` OS user's ids when we are root (PostgreSQL refuses to run as root), else none. */
export function serverOwner(): Owner | undefined {
  if (userInfo().uid !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line)
    throw new OperatorError(
      'PostgreSQL refuses to run as root, and there is no `postgres` user to run it as',
      {
        exitCode: EXIT.UNAVAILABLE,
        hint: 'create one (useradd --system postgres), or run pg-maintd as the user that owns the data',
      },
    );
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

export class RecoveryServer {
  constructor(readonly o: RecoveryServerOptions) {}

  get host(): string {
    return '127.0.0.1';
  }

  async start(): Promise<void> {
    checkServerDataDir(this.o.dataDir);
    const hbaFile = await this.#restoreHba();
    // -W: recovery may take long; waitForRecovery watches it
    await this.#pgCtl([
      '-D',
      this.o.dataDir,
      '-l',
      this.o.logFile,
      '-W',
      '-o',
      `-p ${this.o.port} -c listen_addresses=127.0.0.1 -k ${this.o.dataDir} -c hba_file=${hbaFile}`,
      'start',
    ]);
  }

  /**
   * The restored cluster's own pg_hba.conf, behind one line that lets pg-maintd in through the socket
   * in the data directory without a password: the cluster's rules may say `peer` there (Debian's
   * default), which no role of pg-maintd's passes. Only the directory's owner (and root) can reach
   * that socket (the directory is 0700 or 0750), and the file is named on this start's command line
   * only: the server started again by hand uses its own rules.
   */
  async #restoreHba(): Promise<string> {
    const path = join(this.o.dataDir, RESTORE_HBA_FILE);
    let original = '';
    try {
      const fh = await open(
        join(this.o.dataDir, 'pg_hba.conf'),
        constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      );
      try {
        if ((await fh.stat()).isFile()) original = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await writeFileNoFollow(path, `# pg-maintd: this start only\nlocal all all trust\n${original}`, {
      mode: 0o644,
    });
    return path;
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!existsSync(join(this.o.dataDir, 'postmaster.pid'))) return;
    await this.#pgCtl(['-D', this.o.dataDir, '-m', mode, '-w', '-t', '120', 'stop']).catch(() =>
      this.#pgCtl(['-D', this.o.dataDir, '-m', 'immediate', '-w', '-t', '60', 'stop']).catch(() => undefined),
    );
  }

  /**
   * A client of this server, through its Unix socket in the data directory: a loopback port could
   * have been taken by another local user between freePort() and the server's start. Use connect(),
   * which also checks the cluster.
   */
  client(database = this.o.login.database): pg.Client {
    const c = new pg.Client({
      host: this.o.dataDir,
      port: this.o.port,
      user: this.o.login.user,
      password: this.o.login.password,
      database,
      connectionTimeoutMillis: 5000,
    });
    c.on('error', () => undefined);
    return c;
  }

  /** A connected client of this server, once it has shown it is the base backup's cluster. */
  async connect(database = this.o.login.database): Promise<pg.Client> {
    const c = this.client(database);
    try {
      await c.connect();
      const r = await c.query<{ id: string }>(
        'SELECT system_identifier::text AS id FROM pg_control_system()',
      );
      if (r.rows[0]?.id !== this.o.systemIdentifier)
        throw new OperatorError(
          `the server on ${this.o.dataDir} has system identifier ${r.rows[0]?.id ?? '(none)'}, not the base backup's ${this.o.systemIdentifier}`,
          {
            exitCode: EXIT.DATAERR,
            hint: 'another server answered on the restored server’s socket: check the data directory',
          },
        );
      return c;
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
  }

  /** Waits until recovery ended as asked; `progress` gets the replay position now and then. */
  async waitForRecovery(
    mode: 'promote' | 'pause',
    signal: AbortSignal,
    progress: (replayLsn: string) => void,
  ): Promise<void> {
    let lastProgress = 0;
    let lastError = '';
    // pg_get_wal_replay_pause_state() is 14's; 13's pg_is_wal_replay_paused() is true once asked,
    // which at a pausing target is at once. An unknown function would read as "still starting" forever.
    const pauseState =
      this.o.binaries.major >= 14
        ? 'pg_get_wal_replay_pause_state()'
        : "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END";
    for (;;) {
      if (signal.aborted) throw signal.reason;
      if (!existsSync(join(this.o.dataDir, 'postmaster.pid')) && (await this.#stoppedForGood()))
        throw new OperatorError(`the restored server stopped during recovery:\n${this.logTail()}`, {
          exitCode: EXIT.DATAERR,
          hint: 'the log above says why (a WAL file pg-maintd refused, a target the WAL does not reach); nothing was promoted',
        });
      let c: pg.Client | undefined;
      try {
        c = await this.connect();
        const r = await c.query<{ rec: boolean; lsn: string | null; paused: string | null }>(
          `SELECT pg_is_in_recovery() AS rec, pg_last_wal_replay_lsn()::text AS lsn,
                  CASE WHEN pg_is_in_recovery() THEN ${pauseState} END AS paused`,
        );
        const row = r.rows[0]!;
        if (!row.rec) return;
        if (mode === 'pause' && row.paused === 'paused') return;
        if (Date.now() - lastProgress > 5000 && row.lsn) {
          lastProgress = Date.now();
          progress(row.lsn);
        }
      } catch (err) {
        // starting up, or not yet consistent: not accepting connections yet
        lastError = errorMessage(err);
        if (err instanceof OperatorError) throw err;
        if (
          /password authentication failed|no pg_hba|Peer authentication|Ident authentication/.test(lastError)
        )
          throw new OperatorError(
            `cannot log in to the restored server (through its Unix socket in ${this.o.dataDir}) to follow its recovery: ${lastError}`,
            {
              hint: 'DATABASE_URL must name a role of the backed-up cluster',
            },
          );
      } finally {
        await c?.end().catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async #stoppedForGood(): Promise<boolean> {
    // pg_ctl start returned before the postmaster wrote its pid file: give it a moment
    await new Promise((r) => setTimeout(r, 500));
    return !existsSync(join(this.o.dataDir, 'postmaster.pid'));
  }

  logTail(lines = 20): string {
    try {
      return readFileSync(this.o.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no server log)';
    }
  }

  #pgCtl(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(join(this.o.binaries.binDir, 'pg_ctl'), args, {
        cwd: this.o.dataDir,
        ...(this.o.owner ?? {}),
        // nothing of pg-maintd's environment (DATABASE_URL, credentials): restore_command reads its
        // settings from the file the restore wrote beside the data
        env: { PATH: process.env.PATH, LC_ALL: 'C', LANG: 'C' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0
          ? resolve()
          : reject(
              new OperatorError(`pg_ctl ${args.at(-1)} exited with ${code}: ${out.trim().slice(-1000)}`),
            ),
      );
    });
  }
}
