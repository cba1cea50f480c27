/**
 * The scheduler: evaluates the cron schedules of the scheduled jobs (cron.ts, in SCHEDULE_TZ's
 * wall-clock time) on a one-second heartbeat, which /healthz also watches. Runs of the same job
 * never overlap: a slot that finds the previous run still going is skipped with a warning and a
 * counter. stop() stops the heartbeat, aborts the runs in flight and waits for them.
 *
 * Each job keeps its next slot, an instant. The heartbeat runs a job whose slot has come and
 * computes the job's next slot after the later of that slot and now. So:
 * - a slot that passes without a run (the wall clock jumped forward over it, the host was
 *   suspended, or the event loop was blocked when it came) runs once as soon as the heartbeat
 *   notices; several such slots of one job make one run, with the first of them as its tick;
 * - after the wall clock jumps back, slots already run are not run again: the job resumes at its
 *   first slot after the last one it ran (a daily job loses nothing; a job every few minutes pauses
 *   for the length of the jump);
 * - daylight-saving changes are not jumps (the instants go on): cron.ts maps the skipped and the
 *   repeated wall-clock hour to instants, each slot once.
 * The heartbeat uses the monotonic clock for liveness, so a jump never makes /healthz fail.
 * A job returns what its run came to (ran, skipped and why, failed and why); the scheduler counts
 * the skips, so a job needs neither the scheduler nor a registry to run.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { LivenessCheck } from '../health/watchdog.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { parseCron, type Cron } from '../cron/cron.js';
import { errorMessage } from '../core/errors.js';

export interface JobSpec {
  name: string;
  /** A cron expression, or "off". */
  cron: string;
  timezone: string;
  /**
   * `tick` is the slot: the same instant on every replica. Yields an outcome for each part of the
   * run as it ends (a job that runs for several databases, one each), so a skip is counted when it
   * happens, not hours later when the last database is done, and not lost if a later part throws.
   * A plain promise is a run of one part that ran.
   */
  run(tick: Date, signal: AbortSignal): AsyncIterable<JobOutcome> | Promise<void>;
}

/**
 * Why a tick was skipped: `overlap` (the previous run still going), `not_leader` (another pg-maintd
 * holds the job's lease), `already_done` (the lease's row shows the tick done), `lease_unusable` (the
 * lease table cannot be trusted or made: no pg-maintd runs the job until a DBA fixes it),
 * `standby` / `primary` (the server's role is not the one the job runs on), `claimed` (another
 * pg-maintd sharing the store claimed the slot).
 */
const SKIP_REASONS = [
  'overlap',
  'not_leader',
  'already_done',
  'lease_unusable',
  'standby',
  'primary',
  'claimed',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/** What a run (or its part for one database) came to; `reason` says why in a word where it can. */
export type JobOutcome =
  { kind: 'ran' } | { kind: 'skipped'; reason: SkipReason } | { kind: 'failed'; reason: string };

/** Runs a job's run to its end, handing each outcome to `fn` as it comes. */
export async function eachOutcome(
  run: AsyncIterable<JobOutcome> | Promise<void>,
  fn: (o: JobOutcome) => void,
): Promise<void> {
  if (Symbol.asyncIterator in run) for await (const o of run) fn(o);
  else await run;
}

/** A slot run this late is reported as a catch-up (the heartbeat itself is up to a second late). */
export const CATCH_UP_AFTER_MS = 2000;
/**
 * A jump back beyond this means the clock was wrong, not adjusted: the schedule restarts from now
 * rather than waiting for the slot after the last one run (within it, slots run are not run again).
 */
const RESCHEDULE_AFTER_BACK_JUMP_MS = 2 * 3_600_000;
/** Wall-clock drift against the monotonic clock, per heartbeat, reported as a clock jump. */
const CLOCK_JUMP_MS = 2000;

interface Scheduled {
  job: JobSpec;
  cron: Cron;
  /** The next slot to run (ms), or undefined when the schedule has none left. */
  due: number | undefined;
}

export class Scheduler extends Service {
  readonly name = 'scheduler';
  #timer: NodeJS.Timeout | undefined;
  #lastTick = 0;
  #lastWall = 0;
  readonly #tickMs: number;
  readonly #maxStallMs: number;
  readonly #jobs: Scheduled[] = [];
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
        help: `Scheduled ticks a job skipped, by reason (${SKIP_REASONS.join(', ')}).`,
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

  /**
   * Registers a job; call before start(). A job whose cron is "off" is not scheduled. Throws for
   * an expression or a zone that is not valid (the configuration has checked both).
   */
  addJob(job: JobSpec): void {
    if (job.cron === 'off') return;
    const cron = parseCron(job.cron);
    cron.next(Date.now(), job.timezone); // a zone Intl does not know throws here, not in the heartbeat
    this.#jobs.push({ job, cron, due: undefined });
    for (const reason of SKIP_REASONS) this.#skipped?.inc({ job: job.name, reason }, 0);
  }

  /** Whether a job of this name is scheduled (a job set to "off" is not). */
  has(name: string): boolean {
    return this.#jobs.some((s) => s.job.name === name);
  }

  /**
   * Each scheduled job's next slot, from memory (the status page): the slot the heartbeat waits for
   * once started, the first one after now before that; undefined when the schedule has none left.
   */
  upcoming(): Array<{ job: string; cron: string; timezone: string; next: Date | undefined }> {
    const now = Date.now();
    return this.#jobs.map((s) => {
      const due = this.running ? s.due : s.cron.next(now, s.job.timezone);
      return {
        job: s.job.name,
        cron: s.job.cron,
        timezone: s.job.timezone,
        next: due === undefined ? undefined : new Date(due),
      };
    });
  }

  protected async onStart(): Promise<void> {
    this.#lastTick = performance.now();
    this.#lastWall = Date.now();
    for (const s of this.#jobs) {
      s.due = s.cron.next(this.#lastWall, s.job.timezone);
      this.#log?.info(
        {
          job: s.job.name,
          cron: s.job.cron,
          timezone: s.job.timezone,
          nextRun: s.due === undefined ? null : new Date(s.due),
        },
        'job scheduled',
      );
    }
    this.#timer = setInterval(() => this.#heartbeat(), this.#tickMs);
    this.#timer.unref();
  }

  protected async onStop(): Promise<void> {
    clearInterval(this.#timer);
    for (const r of this.#running.values()) r.abort.abort(new Error('pg-maintd is shutting down'));
    await Promise.allSettled([...this.#running.values()].map((r) => r.promise));
  }

  /** Runs a job now, as its slot would (tests, the demo and the heartbeat use it). */
  trigger(name: string, tick = new Date(Math.floor(Date.now() / 1000) * 1000)): Promise<void> {
    const s = this.#jobs.find((j) => j.job.name === name);
    if (!s) return Promise.reject(new Error(`no job named ${name}`));
    if (this.stopping) return Promise.resolve();
    // the slot after this one, and after now: slots passed meanwhile are covered by this run
    s.due = s.cron.next(Math.max(tick.getTime(), Date.now()), s.job.timezone);
    if (this.#running.has(name)) {
      this.#skipped?.inc({ job: name, reason: 'overlap' });
      this.#log?.warn({ job: name, tick }, 'previous run still going; this tick is skipped');
      return Promise.resolve();
    }
    const abort = new AbortController();
    const count = (o: JobOutcome) => {
      if (o.kind === 'skipped') this.#skipped?.inc({ job: name, reason: o.reason });
    };
    const promise = eachOutcome(s.job.run(tick, abort.signal), count)
      .catch((err: unknown) =>
        this.#log?.error({ job: name, err: { message: errorMessage(err) } }, 'job failed'),
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
    if (drift < -RESCHEDULE_AFTER_BACK_JUMP_MS) {
      // the clock was wrong (fast) when the slots up to now were run: waiting for the slot after the
      // last of them would stop every job for as long as the clock was ahead
      for (const j of this.#jobs) j.due = j.cron.next(wall, j.job.timezone);
      this.#log?.warn(
        { jumpSeconds: Math.round(drift / 1000) },
        'the wall clock jumped back by more than two hours: the slots run before were run on a wrong clock, and the schedule resumes from now',
      );
    } else if (Math.abs(drift) > CLOCK_JUMP_MS) {
      this.#log?.warn(
        { jumpSeconds: Math.round(drift / 1000) },
        drift > 0
          ? 'the wall clock jumped forward (or the host was suspended); slots jumped over run once now'
          : 'the wall clock jumped back; slots already run are not run again',
      );
    }
    for (const s of this.#jobs) {
      if (s.due === undefined || s.due > wall) continue;
      const slot = new Date(s.due);
      if (wall - s.due >= CATCH_UP_AFTER_MS)
        this.#log?.warn({ job: s.job.name, slot }, 'a scheduled slot passed without a run; running it now');
      void this.trigger(s.job.name, slot);
    }
  }

  #collectNextRuns() {
    for (const s of this.#jobs)
      if (s.due !== undefined) this.#nextRun?.set({ job: s.job.name }, s.due / 1000);
  }

  check(): LivenessCheck {
    // not started yet is start-up, not a hung process
    if (!this.running)
      return this.stopping
        ? { ok: false, detail: 'scheduler stopped' }
        : { ok: true, detail: 'scheduler not started yet (start-up in progress)' };
    const since = performance.now() - this.#lastTick;
    const ok = since <= this.#tickMs + this.#maxStallMs;
    return { ok, detail: `last scheduler tick ${Math.round(since)} ms ago` };
  }
}
