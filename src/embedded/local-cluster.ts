/**
 * A throwaway PostgreSQL cluster from local binaries: initdb into a temp folder, a free loopback
 * port, pg_stat_statements preloaded, scram-sha-256 with a generated password. Runs the server as
 * the `postgres` user when we are root (PostgreSQL refuses to run as root). Used by the test harness,
 * by `pg-maintd demo`, and by the benchmarks (which keep theirs in a folder that outlives a run).
 */
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { Service } from '../lifecycle/service.js';
import { findServerBinaries, type ServerBinaries } from '../programs/server-binaries.js';
import { freePort } from '../core/free-port.js';

export interface LocalClusterOptions {
  /** Major version wanted; any when unset. */
  major?: number;
  binaries?: ServerBinaries;
  port?: number;
  /** Extra postgresql.conf settings. */
  settings?: Record<string, string | number>;
  /** Files written into the data folder (mode 0600), e.g. TLS certificates named by `settings`. */
  files?: Record<string, string>;
  /** Replaces pg_hba.conf (e.g. hostssl-only rules). */
  hba?: string[];
  /** Keep the data folder on stop (for debugging). */
  keep?: boolean;
  /**
   * A folder of its own that outlives the cluster, instead of a temp folder: its data folder (and
   * password) are reused by the next start of the same major version, and kept on stop.
   */
  dir?: string;
  /** Extra environment of the server's processes (tests run one under libfaketime, a clock of its own). */
  env?: Record<string, string>;
  /**
   * Make this cluster a streaming hot standby of a running one (pg_basebackup -R) instead of a new
   * one: same roles and password, its own port and folder. `settings` still apply.
   */
  replicaOf?: LocalCluster;
}

const live = new Set<LocalCluster>();
process.once('exit', () => {
  for (const c of live) c.stopServerSync();
});

export class LocalCluster extends Service {
  readonly name = 'local-cluster';
  password: string;
  readonly user = 'postgres';
  readonly binaries: ServerBinaries;
  port = 0;
  dir = '';
  #owner: { uid: number; gid: number } | undefined;

  constructor(private readonly opts: LocalClusterOptions = {}) {
    super();
    this.binaries = opts.binaries ?? opts.replicaOf?.binaries ?? findServerBinaries(opts.major);
    this.password = opts.replicaOf?.password ?? randomBytes(12).toString('base64url');
  }

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  get logFile(): string {
    return join(this.dir, 'server.log');
  }

  /** A connection URL; pass `password: null` for one without the password (give it in PGPASSWORD). */
  url(database = 'postgres', user = this.user, password: string | null = this.password): string {
    const auth = password === null ? user : `${user}:${encodeURIComponent(password)}`;
    return `postgresql://${auth}@127.0.0.1:${this.port}/${database}`;
  }

  protected async onStart(): Promise<void> {
    this.#owner = serverOwner();
    this.port = this.opts.port ?? (await freePort());
    if (this.opts.dir) mkdirSync(this.opts.dir, { recursive: true });
    this.dir = this.opts.dir ?? mkdtempSync(join(tmpdir(), 'pgmaintd-pg-'));
    this.#chown(this.dir);
    if (this.opts.replicaOf) return this.#startReplica(this.opts.replicaOf);
    if (this.opts.dir) {
      if (await this.#reuse()) return;
      rmSync(this.#passwordFile, { force: true }); // written again once the new cluster exists
      rmSync(this.dataDir, { recursive: true, force: true });
    }
    const pwfile = join(this.dir, 'pwfile');
    writeFileSync(pwfile, `${this.password}\n`, { mode: 0o600 });
    this.#chown(pwfile);
    await this.#run('initdb', [
      '-D',
      this.dataDir,
      '-U',
      this.user,
      '--auth=scram-sha-256',
      `--pwfile=${pwfile}`,
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ]);
    rmSync(pwfile);
    const settings: Record<string, string | number> = {
      port: this.port,
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: `'${this.dir}'`,
      shared_preload_libraries: "'pg_stat_statements'",
      'pg_stat_statements.track': "'all'",
      track_io_timing: 'on',
      max_connections: 200,
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      ...this.opts.settings,
    };
    appendFileSync(
      join(this.dataDir, 'postgresql.conf'),
      `\n# pg-maintd local cluster\n${Object.entries(settings)
        .map(([k, v]) => `${k} = ${v}`)
        .join('\n')}\n`,
    );
    for (const [name, content] of Object.entries(this.opts.files ?? {})) {
      const path = join(this.dataDir, name);
      writeFileSync(path, content, { mode: 0o600 });
      this.#chown(path);
    }
    if (this.opts.hba) writeFileSync(join(this.dataDir, 'pg_hba.conf'), `${this.opts.hba.join('\n')}\n`);
    // only once the cluster exists: a folder with a password file holds a cluster to reuse
    if (this.opts.dir) writeFileSync(this.#passwordFile, `${this.password}\n`, { mode: 0o600 });
    live.add(this);
    await this.startServer();
  }

  get #passwordFile(): string {
    return join(this.dir, 'password');
  }

  /** Starts the cluster its own folder holds, when it is of this major version; false when there is none. */
  async #reuse(): Promise<boolean> {
    const versionFile = join(this.dataDir, 'PG_VERSION');
    if (!existsSync(this.#passwordFile) || !existsSync(versionFile)) return false;
    if (Number(readFileSync(versionFile, 'utf8').trim()) !== this.binaries.major) return false;
    this.password = readFileSync(this.#passwordFile, 'utf8').trim();
    // left running by a process that did not stop it: stopped, then started on this start's port
    await this.stopServer().catch(() => undefined);
    live.add(this);
    await this.startServer();
    return true;
  }

  /** A copy of the primary's data folder that follows it (standby.signal, primary_conninfo). */
  async #startReplica(primary: LocalCluster): Promise<void> {
    await this.#run(
      'pg_basebackup',
      ['-D', this.dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync'].concat([
        '-h',
        '127.0.0.1',
        '-p',
        String(primary.port),
        '-U',
        primary.user,
      ]),
      { PGPASSWORD: primary.password },
    );
    // the primary's postgresql.conf came along: the later lines win
    const settings: Record<string, string | number> = {
      port: this.port,
      unix_socket_directories: `'${this.dir}'`,
      hot_standby: 'on',
      ...this.opts.settings,
    };
    appendFileSync(
      join(this.dataDir, 'postgresql.conf'),
      `\n# pg-maintd local standby\n${Object.entries(settings)
        .map(([k, v]) => `${k} = ${v}`)
        .join('\n')}\n`,
    );
    live.add(this);
    await this.startServer();
  }

  protected async onStop(): Promise<void> {
    live.delete(this);
    await this.stopServer();
    if (!this.opts.keep && !this.opts.dir && this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Starts the server on its data folder (again, after stopServer()). */
  async startServer(): Promise<void> {
    try {
      // the port of this start (a reused folder's configuration names the port of an earlier one)
      const args = [
        '-D',
        this.dataDir,
        '-l',
        this.logFile,
        '-o',
        `-p ${this.port}`,
        '-w',
        '-t',
        '60',
        'start',
      ];
      await this.#run('pg_ctl', args);
    } catch (err) {
      const tail = existsSync(this.logFile)
        ? readFileSync(this.logFile, 'utf8').split('\n').slice(-15).join('\n')
        : '';
      throw new OperatorError(`local PostgreSQL failed to start: ${errorMessage(err)}\n${tail}`, {
        exitCode: EXIT.UNAVAILABLE,
        cause: err,
      });
    }
  }

  /** Really stops the server (fast mode: disconnects clients), keeping the data. */
  async stopServer(): Promise<void> {
    if (!existsSync(join(this.dataDir, 'postmaster.pid'))) return;
    await this.#run('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', '-t', '60', 'stop']);
  }

  stopServerSync(): void {
    if (!this.dir || !existsSync(join(this.dataDir, 'postmaster.pid'))) return;
    spawnSync(join(this.binaries.binDir, 'pg_ctl'), ['-D', this.dataDir, '-m', 'immediate', 'stop'], {
      ...this.#spawnOpts(),
      stdio: 'ignore',
    });
  }

  #chown(path: string) {
    if (this.#owner) chownSync(path, this.#owner.uid, this.#owner.gid);
  }

  #spawnOpts(): SpawnOptions {
    return {
      cwd: this.dir || tmpdir(),
      ...(this.#owner ?? {}),
      env: { ...process.env, LC_ALL: 'C', ...this.opts.env },
    };
  }

  #run(bin: string, args: string[], env: Record<string, string> = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      const opts = this.#spawnOpts();
      const child = spawn(join(this.binaries.binDir, bin), args, {
        ...opts,
        env: { ...opts.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`${bin} exited with ${code}: ${output.trim().slice(-2000)}`)),
      );
    });
  }
}

/** The uid/gid to run the server as: ourselves, or the postgres user when we are root. */
function serverOwner(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) {
    throw new OperatorError(
      'PostgreSQL refuses to run as root, and there is no `postgres` user to run it as',
      {
        exitCode: EXIT.UNAVAILABLE,
        hint: 'create one: useradd --system --home /var/lib/postgresql postgres (or run as a non-root user)',
      },
    );
  }
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}
