/** Spawns the real CLI (bin/pg-maintd.js, built dist/) and reads its JSON log lines. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../bin/pg-maintd.js', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface SpawnedCli {
  child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** What was written to stdout alone, and to stderr alone. */
  stdout(): string;
  stderr(): string;
  lines(): LogLine[];
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Every CLI process a test started that has not exited yet. */
const live = new Set<ChildProcess>();

/**
 * Kills what a test file left running: a test that failed before its `finally` must not leave a
 * daemon behind to poll a dropped database for the rest of the run (or forever, after it).
 */
export function reapClis(): number {
  const left = [...live];
  for (const child of left) child.kill('SIGKILL');
  live.clear();
  return left.length;
}
process.on('exit', reapClis);

export function spawnCli(args: string[], env: Record<string, string | undefined>): SpawnedCli {
  const child = spawn(process.execPath, [CLI, ...args], {
    // the daemon migrates on start by default; tests that want it set MIGRATE_ON_START=true
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TMPDIR: process.env.TMPDIR, // the test file's own (reap.ts): what the CLI leaves there fails the file
      LOG_FORMAT: 'json',
      MIGRATE_ON_START: 'false',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const apart = { stdout: '', stderr: '' };
  const waiters: Array<() => void> = [];
  const onData = (stream: 'stdout' | 'stderr') => (d: Buffer) => {
    out += d.toString();
    apart[stream] += d.toString();
    for (const w of waiters.splice(0)) w();
  };
  child.stdout!.on('data', onData('stdout'));
  child.stderr!.on('data', onData('stderr'));
  live.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      live.delete(child);
      for (const w of waiters.splice(0)) w();
      resolve({ code, signal });
    }),
  );
  // complete lines only: the last one may still be arriving
  const lines = () =>
    out
      .split('\n')
      .slice(0, -1)
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
  return {
    child,
    output: () => out,
    stdout: () => apart.stdout,
    stderr: () => apart.stderr,
    lines,
    exited,
    waitForLog(pred, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`log line not seen within ${timeoutMs} ms; output:\n${out}`)),
          timeoutMs,
        );
        const check = () => {
          const hit = lines().find(pred);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          } else if (child.exitCode !== null) {
            clearTimeout(timer);
            reject(new Error(`process exited (${child.exitCode}) before the log line; output:\n${out}`));
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}

/** Runs a one-shot command to its end: its exit code and everything it printed. */
export async function runCli(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number | null; out: string }> {
  const cli = spawnCli(args, env);
  const { code } = await cli.exited;
  return { code, out: cli.output() };
}

/** Starts `pg-maintd run` on a free port and waits until it serves. */
export async function startDaemon(env: Record<string, string | undefined>, args: string[] = []) {
  const cli = spawnCli(['run', ...args], { HTTP_HOST: '127.0.0.1', HTTP_PORT: '0', ...env });
  const listening = await cli.waitForLog((l) => l.msg === 'http server listening');
  await cli.waitForLog((l) => l.msg === 'pg-maintd started');
  const port = (listening.address as { port: number }).port;
  return { ...cli, port, base: `http://127.0.0.1:${port}` };
}

export async function getJson(
  url: string,
): Promise<{ status: number; body: Record<string, unknown>; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(url);
  const body = (await res.json()) as Record<string, unknown>;
  return { status: res.status, body, ms: performance.now() - t0 };
}

/** The value of the first sample of `name` whose labels include `labels`, in exposition text. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

export async function waitFor<T>(
  fn: () => Promise<T>,
  pred: (v: T) => boolean,
  timeoutMs = 20_000,
  stepMs = 100,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < until) {
    last = await fn();
    if (pred(last)) return last;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms; last value: ${JSON.stringify(last)}`);
}

/**
 * The CLI's env for a database URL: its password moved to PGPASSWORD (never in the URL or argv),
 * TLS off for the local clusters, backups in `dir`, every schedule off unless `extra` sets one.
 */
export function cliEnv(
  url: string,
  dir: string,
  extra: Record<string, string> = {},
): Record<string, string> & { DATABASE_URL: string; PGPASSWORD: string } {
  const u = new URL(url);
  const password = decodeURIComponent(u.password);
  u.password = '';
  return {
    DATABASE_URL: u.toString(),
    PGPASSWORD: password,
    DB_SSL_MODE: 'disable',
    BACKUP_DIR: dir,
    BACKUP_SCHEDULE: 'off',
    BACKUP_VERIFY_SCHEDULE: 'off',
    MAINTENANCE_SCHEDULE: 'off',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

type Daemon = Awaited<ReturnType<typeof startDaemon>>;

/** The daemon's /metrics, as text. */
export async function scrapeMetrics(d: Daemon): Promise<string> {
  return (await fetch(`${d.base}/metrics`)).text();
}

/** Polls /healthz every 250 ms until the returned function is called: the statuses seen (0: no answer). */
export function watchHealth(d: Daemon): () => Promise<number[]> {
  const seen: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      seen.push(
        await fetch(`${d.base}/healthz`).then(
          (r) => r.status,
          () => 0,
        ),
      );
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return async () => {
    running = false;
    await loop;
    return seen;
  };
}
