/**
 * Events a client can repeat at will (wrong credentials, unknown paths): each is worth a debug line,
 * but a warning at most once a period, with the count since the last one, or a scanner floods the
 * log. Monotonic time: a clock set back does not silence the warnings.
 */
export class LogThrottle {
  #count = 0;
  #lastWarn = Number.NEGATIVE_INFINITY;

  constructor(private readonly everyMs = 60_000) {}

  /** Counts one event; returns how many to report when a warning is due now, else undefined. */
  hit(now = performance.now()): number | undefined {
    this.#count++;
    if (now - this.#lastWarn < this.everyMs) return undefined;
    const count = this.#count;
    this.#count = 0;
    this.#lastWarn = now;
    return count;
  }
}
