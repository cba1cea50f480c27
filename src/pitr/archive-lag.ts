/**
 * How far the store is behind the server: in bytes (the server's WAL position minus the end of the
 * newest WAL stored) and in seconds (how long ago the server first had a byte the store still does
 * not: the data a lost server would take with it, the RPO). The server's position is sampled with
 * its time about once a second; a sample the store has caught up with is dropped.
 */

/**
 * Samples kept at most (an hour at one a second). Past it, every other one between the oldest and
 * the newest goes: the oldest the store lacks must stay, or a long outage would look an hour old.
 */
const MAX_SAMPLES = 3600;

export class ArchiveLag {
  #samples: Array<{ lsn: bigint; at: number }> = [];
  #stored: bigint | undefined;

  /** The end of the newest WAL known stored (a finished segment's end, or a partial's last byte). */
  get stored(): bigint | undefined {
    return this.#stored;
  }

  /** The store now holds WAL up to `position` (only ever moves forward, except by reset()). */
  storedUpTo(position: bigint): void {
    if (this.#stored === undefined || position > this.#stored) this.#stored = position;
    this.#prune();
  }

  /** A new stream from another position (after a gap): what was stored says nothing about it. */
  reset(position?: bigint): void {
    this.#stored = position;
    this.#samples = [];
  }

  sample(lsn: bigint, at: number): void {
    this.#samples.push({ lsn, at });
    this.#prune();
    if (this.#samples.length > MAX_SAMPLES) {
      const s = this.#samples;
      this.#samples = s.filter((_, i) => i === 0 || i === s.length - 1 || i % 2 === 0);
    }
  }

  /** Lag now; undefined before anything is known. */
  lag(now: number): { bytes: number; seconds: number } | undefined {
    const last = this.#samples.at(-1);
    if (this.#stored === undefined) return undefined;
    if (!last) return { bytes: 0, seconds: 0 };
    const bytes = last.lsn > this.#stored ? Number(last.lsn - this.#stored) : 0;
    const oldest = this.#samples[0]!;
    const seconds = oldest.lsn > this.#stored ? Math.max(0, (now - oldest.at) / 1000) : 0;
    return { bytes, seconds };
  }

  #prune(): void {
    const stored = this.#stored;
    if (stored === undefined) return;
    // keep the newest sample even when caught up: it is the server's position for lagBytes
    while (this.#samples.length > 1 && this.#samples[0]!.lsn <= stored) this.#samples.shift();
  }
}
