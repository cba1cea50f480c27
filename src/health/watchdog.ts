/**
 * Event-loop watchdog: a timer that should fire every `intervalMs`. How late it fires is the
 * event-loop lag. A lag above the limit makes /healthz answer 503 until the loop is responsive again.
 */
import { Service } from '../lifecycle/service.js';

export interface LivenessCheck {
  ok: boolean;
  detail: string;
}

export class EventLoopWatchdog extends Service {
  readonly name = 'event-loop-watchdog';
  #timer: NodeJS.Timeout | undefined;
  #last = 0;
  #lastLagMs = 0;
  readonly #intervalMs: number;
  readonly #maxLagMs: number;

  constructor(opts: { maxLagMs: number; intervalMs?: number }) {
    super();
    this.#maxLagMs = opts.maxLagMs;
    this.#intervalMs = opts.intervalMs ?? Math.max(10, Math.min(1000, Math.floor(opts.maxLagMs / 4)));
  }

  protected async onStart(): Promise<void> {
    this.#last = performance.now();
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.#lastLagMs = Math.max(0, now - this.#last - this.#intervalMs);
      this.#last = now;
    }, this.#intervalMs);
    this.#timer.unref();
  }

  protected async onStop(): Promise<void> {
    clearInterval(this.#timer);
  }

  /** The worse of the last measured lag and how overdue the next beat is right now. */
  check(): LivenessCheck {
    if (!this.running) return { ok: false, detail: 'watchdog not running' };
    const overdue = Math.max(0, performance.now() - this.#last - this.#intervalMs);
    const lag = Math.max(this.#lastLagMs, overdue);
    const ok = lag <= this.#maxLagMs;
    return { ok, detail: `event-loop lag ${Math.round(lag)} ms (limit ${this.#maxLagMs} ms)` };
  }
}
