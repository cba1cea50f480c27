/**
 * The scheduler: owns the timers of the scheduled jobs and a one-second heartbeat. Jobs (backups,
 * maintenance) register here in later modules; /healthz reports a scheduler whose heartbeat stalls.
 */
import { Service } from '../lifecycle/service.js';
import type { LivenessCheck } from '../health/watchdog.js';

export class Scheduler extends Service {
  readonly name = 'scheduler';
  #timer: NodeJS.Timeout | undefined;
  #lastTick = 0;
  readonly #tickMs: number;
  readonly #maxStallMs: number;

  constructor(opts: { maxStallMs: number; tickMs?: number }) {
    super();
    this.#maxStallMs = opts.maxStallMs;
    this.#tickMs = opts.tickMs ?? 1000;
  }

  protected async onStart(): Promise<void> {
    this.#lastTick = performance.now();
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    this.#timer.unref();
  }

  protected async onStop(): Promise<void> {
    clearInterval(this.#timer);
  }

  #tick() {
    this.#lastTick = performance.now();
  }

  check(): LivenessCheck {
    if (!this.running)
      return { ok: false, detail: this.stopping ? 'scheduler stopped' : 'scheduler not started' };
    const since = performance.now() - this.#lastTick;
    const ok = since <= this.#tickMs + this.#maxStallMs;
    return { ok, detail: `last scheduler tick ${Math.round(since)} ms ago` };
  }
}
