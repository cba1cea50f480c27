/**
 * pg_receivewal as a managed child: `pg_receivewal -D <spool> -S <slot> --no-loop --synchronous`,
 * connected only through libpq's environment (the password never in argv, which every local user
 * can read), its stderr logged line by line, and started again with exponential backoff (1 s to
 * 60 s, back to 1 s after a healthy minute) whenever it exits. What to connect to is asked before
 * every start, so a DATABASE_URL_FILE rewritten by a failover is followed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../log/logger.js';

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
const HEALTHY_MS = 60_000;
const STOP_GRACE_MS = 10_000;
const DEBIAN_ROOT = '/usr/lib/postgresql';

/**
 * Where pg_receivewal is: PG_CLIENT_BIN_DIR, else Debian's folder of the server's major version (or
 * the nearest newer one: a client streams from older servers, not newer), else the PATH.
 */
export function receivewalPath(clientBinDir: string | undefined, serverMajor: number): string {
  if (clientBinDir) return join(clientBinDir, 'pg_receivewal');
  let majors: number[] = [];
  try {
    majors = readdirSync(DEBIAN_ROOT)
      .map(Number)
      .filter((m) => Number.isInteger(m) && m >= serverMajor)
      .sort((a, b) => a - b);
  } catch {
    // not Debian's layout
  }
  for (const m of majors) {
    const path = join(DEBIAN_ROOT, String(m), 'bin', 'pg_receivewal');
    if (existsSync(path)) return path;
  }
  return 'pg_receivewal';
}

/** What one start needs: the program, and the libpq environment of the current target. */
export interface ReceiverLaunch {
  path: string;
  env: NodeJS.ProcessEnv;
}

export interface ReceiverOptions {
  spoolDir: string;
  slot: string;
  logger: Logger;
  /**
   * Called before every start (and again after a backoff when it throws): checks the slot, reads
   * the connection target afresh. Undefined: do not start now (the caller stops the receiver).
   */
  prepare: () => Promise<ReceiverLaunch | undefined>;
  /** Every stderr line, for the archiver to recognise missing WAL or a full disk. */
  onLine?: (line: string) => void;
  /** The child exited and will be started again after `delayMs`. */
  onRestart?: (delayMs: number) => void;
  /** Whether the child is running now (for archiver_up). */
  onRunning?: (running: boolean) => void;
}

export class WalReceiver {
  #child: ChildProcess | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  #immediate = false;

  constructor(private readonly o: ReceiverOptions) {}

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Ends the child (SIGTERM, then SIGKILL after a grace) and the restart loop. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    this.#child?.kill('SIGTERM');
    await this.#loop;
  }

  /** Ends the running child so that it starts again at once through prepare() (a gap, a lost slot). */
  restartNow(): void {
    this.#immediate = true;
    this.#child?.kill('SIGTERM');
    this.#wake?.();
  }

  async #run(): Promise<void> {
    let delay = BACKOFF_MIN_MS;
    let first = true;
    while (!this.#stopping) {
      if (!first && !this.#immediate) {
        this.o.onRestart?.(delay);
        await this.#sleep(delay);
        if (this.#stopping) break;
      }
      this.#immediate = false;
      first = false;
      let launch: ReceiverLaunch | undefined;
      try {
        launch = await this.o.prepare();
      } catch (err) {
        this.o.logger.warn(
          { err: { message: (err as Error).message } },
          'pg_receivewal not started: preparing it failed; trying again',
        );
        delay = Math.min(delay * 2, BACKOFF_MAX_MS);
        continue;
      }
      if (!launch || this.#stopping) break;
      const started = performance.now();
      const code = await this.#runOnce(launch);
      if (this.#stopping) break;
      const ran = performance.now() - started;
      delay = ran >= HEALTHY_MS ? BACKOFF_MIN_MS : Math.min(delay * 2, BACKOFF_MAX_MS);
      this.o.logger.warn({ exit: code, ranMs: Math.round(ran) }, 'pg_receivewal exited; starting it again');
    }
  }

  #runOnce(launch: ReceiverLaunch): Promise<string> {
    const args = ['-D', this.o.spoolDir, '-S', this.o.slot, '--no-loop', '--synchronous', '-w', '-n'];
    return new Promise((resolve) => {
      const child = spawn(launch.path, args, { env: launch.env, stdio: ['ignore', 'ignore', 'pipe'] });
      this.#child = child;
      let settled = false;
      let killTimer: NodeJS.Timeout | undefined;
      const finish = (how: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(killTimer);
        this.#child = undefined;
        this.o.onRunning?.(false);
        resolve(how);
      };
      child.on('spawn', () => {
        this.o.logger.info({ pid: child.pid, slot: this.o.slot }, 'pg_receivewal started');
        this.o.onRunning?.(true);
      });
      child.on('error', (err) => {
        this.o.logger.error(
          { err: { message: err.message }, path: launch.path },
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? `pg_receivewal not found at ${launch.path}: install the PostgreSQL client or set PG_CLIENT_BIN_DIR`
            : 'pg_receivewal could not be started',
        );
        finish('spawn failed');
      });
      child.on('exit', (code, signal) => {
        // stderr may still hold its last lines; the 'close' event below comes after them
        killTimer ??= setTimeout(() => finish(signal ?? `code ${code}`), 2000);
      });
      child.on('close', (code, signal) => finish(signal ?? `code ${code}`));
      const lines = createInterface({ input: child.stderr! });
      lines.on('line', (line) => {
        const text = line.replace(/^pg_receivewal:\s*/, '');
        if (!text) return;
        const level = /error|fatal|could not|no space/i.test(text) ? 'warn' : 'info';
        this.o.logger[level]({ receiver: true }, `pg_receivewal: ${text}`);
        this.o.onLine?.(text);
      });
      if (this.#stopping) child.kill('SIGTERM');
      // a child that ignores SIGTERM while stopping gets SIGKILL
      const stopCheck = setInterval(() => {
        if (!this.#stopping || settled) return;
        clearInterval(stopCheck);
        const t = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        t.unref();
      }, 200);
      stopCheck.unref();
      child.once('close', () => clearInterval(stopCheck));
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.#wake = done;
    });
  }
}
