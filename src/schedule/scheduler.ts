/**
 * The scheduler: owns the cron tasks of the scheduled jobs (node-cron, in SCHEDULE_TZ) and a
 * one-second heartbeat that /healthz watches. Runs of the same job never overlap: a tick that finds
 * the previous run still going is skipped with a warning and a counter. stop() stops the ticks,
 * aborts the runs in flight and waits for them.
 *
 * Clock jumps and stalls. Each cron slot fires at most once, in wall-clock time (SCHEDULE_TZ):
 * - a slot that passes without a run (the wall clock jumped forward over it, the host was
 *   suspended, or the event loop was blocked when it came) runs once as soon as the heartbeat
 *   notices, within about CATCH_UP_AFTER_MS; several such slots of one job make one run;
 * - after the wall clock jumps back, slots already run are not run again: the job resumes at its
 *   first slot after the last one it ran (a daily job loses nothing; a job every few minutes pauses
 *   for the length of the jump).
 * The heartbeat uses the monotonic clock, so a jump never makes /healthz fail.
 */
import { createTask, type ScheduledTask } from 'node-cron';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { LivenessCheck } from '../health/watchdog.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';

export interface JobSpec {
  name: string;
  /** A cron expression, or "off". */
  cron: string;
  timezone: string;
  run(tick: Date, signal: AbortSignal): Promise<void>;
}

export type SkipReason = 'overlap' | 'not_leader' | 'already_done';

/** A slot this late without a run is run by the heartbeat (node-cron runs slots up to 1 s late). */
export const CATCH_UP_AFTER_MS = 2000;
/** Wall-clock drift against the monotonic clock, per heartbeat, reported as a clock jump. */
const CLOCK_JUMP_MS = 2000;

export class Scheduler extends Service {
  readonly name = 'scheduler';
  #timer: NodeJS.Timeout | undefined;
  #lastTick = 0;
  #lastWall = 0;
  /** Per job: the first slot after the last one run or skipped, and that last slot. */
  readonly #due = new Map<string, Date>();
  readonly #lastSlot = new Map<string, number>();
  readonly #tickMs: number;
  readonly #maxStallMs: number;
  readonly #jobs: JobSpec[] = [];
  readonly #tasks: ScheduledTask[] = [];
  readonly #running = new Map<string, { promise: Promise<void>; abort: AbortController }>();
  readonly #skipped: Counter<'job' | 'reason'> | undefined;
  readonly #nextRun: Gauge<'job'> | undefined;
  readonly #log: Logger | undefined;

  constructor(opts: { maxStallMs: number; tickMs?: number; registry?: Registry; logger?: Logger }) {
    super();
    this.#maxStallMs = opts.maxStallMs;
    this.#tickMs = opts.tickMs ?? 1000;
    this.#log = opts.logger;
    if (opts.registry) {
      this.#skipped = new Counter({
        name: 'pgmaintd_job_skipped_total',
        help: 'Scheduled ticks a job skipped, by reason (overlap, not_leader, already_done).',
        labelNames: ['job', 'reason'],
        registers: [opts.registry],
      });
      this.#nextRun = new Gauge({
        name: 'pgmaintd_job_next_run_timestamp_seconds',
        help: 'When each scheduled job runs next (Unix seconds).',
        labelNames: ['job'],
        registers: [opts.registry],
        collect: () => this.#collectNextRuns(),
      });
    }
  }

  /** Registers a job; call before start(). A job whose cron is "off" is not scheduled. */
  addJob(job: JobSpec): void {
    if (job.cron === 'off') return;
    this.#jobs.push(job);
    for (const reason of ['overlap', 'not_leader', 'already_done'] as const)
      this.#skipped?.inc({ job: job.name, reason }, 0);
  }

  /** Whether a job of this name is scheduled (a job set to "off" is not). */
  has(name: string): boolean {
    return this.#jobs.some((j) => j.name === name);
  }

  recordSkip(job: string, reason: SkipReason): void {
    this.#skipped?.inc({ job, reason });
  }

  protected async onStart(): Promise<void> {
    this.#lastTick = performance.now();
    this.#lastWall = Date.now();
    this.#timer = setInterval(() => this.#heartbeat(), this.#tickMs);
    this.#timer.unref();
    for (const job of this.#jobs) {
      // the slot itself, not the time node-cron got round to it (up to 2 s later): replicas must agree
      const task = createTask(job.cron, (ctx) => this.trigger(job.name, ctx.date), {
        timezone: job.timezone,
        name: job.name,
      });
      // the heartbeat runs missed slots; without a listener node-cron prints a warning to the console
      task.on('execution:missed', () => undefined);
      await task.start();
      this.#tasks.push(task);
      const next = task.getNextRun();
      if (next) this.#due.set(job.name, next);
      this.#log?.info(
        { job: job.name, cron: job.cron, timezone: job.timezone, nextRun: task.getNextRun() },
        'job scheduled',
      );
    }
  }

  protected async onStop(): Promise<void> {
    clearInterval(this.#timer);
    for (const t of this.#tasks) await t.stop();
    for (const r of this.#running.values()) r.abort.abort(new Error('pg-maintd is shutting down'));
    await Promise.allSettled([...this.#running.values()].map((r) => r.promise));
  }

  /** Runs a job now, as a tick would (tests and the cron tasks use it). */
  trigger(name: string, tick = new Date(Math.floor(Date.now() / 1000) * 1000)): Promise<void> {
    const job = this.#jobs.find((j) => j.name === name);
    if (!job) return Promise.reject(new Error(`no job named ${name}`));
    if (this.stopping) return Promise.resolve();
    this.#lastSlot.set(name, Math.max(tick.getTime(), this.#lastSlot.get(name) ?? 0));
    // the slot after this one (after a jump back, the wall clock has to reach it first)
    const next = this.#tasks.find((t) => t.name === name)?.getNextRun();
    if (next && next.getTime() > tick.getTime()) this.#due.set(name, next);
    if (this.#running.has(name)) {
      this.#skipped?.inc({ job: name, reason: 'overlap' });
      this.#log?.warn({ job: name, tick }, 'previous run still going; this tick is skipped');
      return Promise.resolve();
    }
    const abort = new AbortController();
    const promise = job
      .run(tick, abort.signal)
      .catch((err: unknown) =>
        this.#log?.error({ job: name, err: { message: (err as Error).message } }, 'job failed'),
      )
      .finally(() => this.#running.delete(name));
    this.#running.set(name, { promise, abort });
    return promise;
  }

  #heartbeat() {
    const mono = performance.now();
    const wall = Date.now();
    const drift = wall - this.#lastWall - (mono - this.#lastTick);
    this.#lastTick = mono;
    this.#lastWall = wall;
    if (Math.abs(drift) > CLOCK_JUMP_MS) {
      this.#log?.warn(
        { jumpSeconds: Math.round(drift / 1000) },
        drift > 0
          ? 'the wall clock jumped forward (or the host was suspended); slots jumped over run once now'
          : 'the wall clock jumped back; slots already run are not run again',
      );
    }
    for (const task of this.#tasks) {
      const name = task.name!;
      const due = this.#due.get(name);
      const last = this.#lastSlot.get(name) ?? 0;
      // A passed slot not yet run: node-cron may still run it (up to 1 s late); later, we do.
      // After a jump back, the next slots may be ones already run: they count as handled.
      if (due && due.getTime() <= wall && due.getTime() > last) {
        if (wall - due.getTime() < CATCH_UP_AFTER_MS) continue;
        this.#log?.warn({ job: name, slot: due }, 'a scheduled slot passed without a run; running it now');
        void this.trigger(name, due);
      }
    }
  }

  #collectNextRuns() {
    for (const t of this.#tasks) {
      const next = t.getNextRun();
      if (next && t.name) this.#nextRun?.set({ job: t.name }, next.getTime() / 1000);
    }
  }

  check(): LivenessCheck {
    // not started yet is start-up (migrations may take minutes), not a hung process
    if (!this.running)
      return this.stopping
        ? { ok: false, detail: 'scheduler stopped' }
        : { ok: true, detail: 'scheduler not started yet (start-up in progress)' };
    const since = performance.now() - this.#lastTick;
    const ok = since <= this.#tickMs + this.#maxStallMs;
    return { ok, detail: `last scheduler tick ${Math.round(since)} ms ago` };
  }
}
