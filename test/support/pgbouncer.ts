/**
 * A real PgBouncer (Debian's package: /usr/sbin/pgbouncer) in front of the harness's PostgreSQL, in
 * the pool mode a test asks for. Runs as the postgres user when we are root (PgBouncer refuses root).
 */
import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/core/free-port.js';

export const PGBOUNCER = process.env.PGBOUNCER_BIN ?? '/usr/sbin/pgbouncer';

export interface TestPgBouncer {
  port: number;
  /** The upstream URL with PgBouncer's host and port instead (same user and password). */
  url: string;
  stop(): Promise<void>;
}

export async function startPgBouncer(
  upstreamUrl: string,
  opts: { poolMode: 'transaction' | 'session'; ignoreStartupOptions?: boolean },
): Promise<TestPgBouncer> {
  if (!existsSync(PGBOUNCER))
    throw new Error(`no PgBouncer at ${PGBOUNCER}: apt-get install pgbouncer (or set PGBOUNCER_BIN)`);
  const up = new URL(upstreamUrl);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'pgmaintd-pgbouncer-'));
  const user = decodeURIComponent(up.username);
  const password = decodeURIComponent(up.password);
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" "${password.replace(/"/g, '""')}"\n`, { mode: 0o600 });
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=${up.hostname} port=${up.port}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      `pool_mode = ${opts.poolMode}`,
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      ...(opts.ignoreStartupOptions ? ['ignore_startup_parameters = options'] : []),
      '',
    ].join('\n'),
  );
  const owner = userInfo().uid === 0 ? postgresUser() : undefined;
  if (owner)
    for (const f of ['', 'userlist.txt', 'pgbouncer.ini']) chownSync(join(dir, f), owner.uid, owner.gid);
  const child = spawn(PGBOUNCER, [join(dir, 'pgbouncer.ini')], {
    ...(owner ?? {}),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const log = () =>
    existsSync(join(dir, 'pgbouncer.log')) ? readFileSync(join(dir, 'pgbouncer.log'), 'utf8') : '';
  const until = Date.now() + 20_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`PgBouncer did not start: ${stderr}${log()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const url = new URL(upstreamUrl);
  url.port = String(port);
  url.hostname = '127.0.0.1';
  return {
    port,
    url: url.toString(),
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGINT');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function postgresUser(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('PgBouncer refuses to run as root, and there is no postgres user');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}
