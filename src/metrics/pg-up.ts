/**
 * pg_up: whether the last connection attempt to the database of DATABASE_URL (a poll's or the
 * readiness probe's) succeeded. On a change, whichever attempt saw it first, the collectors poll
 * early: when the database went away, so their series are dropped now rather than served until their
 * next poll; when it is back, the ones that failed, so they recover now. Near a connection limit some
 * attempts succeed and others are refused, so pg_up can flip at every attempt: the early polls come in
 * at most one round per EARLY_POLL_GAP_MS, for the state as it is then, or they would add to the
 * connections the server is short of.
 *
 * This keeps pg_up and paces the early polls; the poller (poller.ts) says which collectors poll.
 */
import { Gauge, type Registry } from 'prom-client';

/** At most one round of early polls (for a change of pg_up) in this long. */
export const EARLY_POLL_GAP_MS = 5000;

export interface PgUpOptions {
  registry: Registry;
  /** Whether the poller runs: a change before its start or after its stop polls nothing. */
  running(): boolean;
  /** Polls early, for pg_up as it is now (`up`). */
  pollEarly(up: boolean): void;
}

export class PgUp {
  readonly #o: PgUpOptions;
  readonly #gauge: Gauge;
  /** Undefined until the first attempt: the first answer is no change to react to. */
  #now: boolean | undefined;
  /** When the collectors last polled early for a change of pg_up, and the round waiting its turn. */
  #earlyAt = 0;
  #earlyTimer: NodeJS.Timeout | undefined;

  constructor(o: PgUpOptions) {
    this.#o = o;
    this.#gauge = new Gauge({
      name: 'pg_up',
      help: 'Whether the last connection to the database succeeded (1) or not (0).',
      registers: [o.registry],
    });
    this.#gauge.set(0);
  }

  /** pg_up as it is now: whether the last connection attempt succeeded. */
  get up(): boolean {
    return this.#now === true;
  }

  /** The outcome of a connection attempt: pg_up follows it, and a change polls early (in its turn). */
  set(ok: boolean): void {
    const wasUp = this.#now;
    this.#now = ok;
    this.#gauge.set(ok ? 1 : 0);
    if (ok === wasUp || wasUp === undefined || !this.#o.running() || this.#earlyTimer !== undefined) return;
    const wait = this.#earlyAt + EARLY_POLL_GAP_MS - Date.now();
    if (wait <= 0) this.#pollEarly();
    else {
      this.#earlyTimer = setTimeout(() => {
        this.#earlyTimer = undefined;
        this.#pollEarly();
      }, wait);
      this.#earlyTimer.unref(); // stop() clears it; it alone keeps nothing alive
    }
  }

  /** The early polls waiting their turn are called off (the poller stops). */
  stop(): void {
    clearTimeout(this.#earlyTimer);
    this.#earlyTimer = undefined;
  }

  #pollEarly() {
    if (!this.#o.running()) return;
    this.#earlyAt = Date.now();
    this.#o.pollEarly(this.#now === true);
  }
}
