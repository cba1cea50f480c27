/**
 * A skip that repeats at every tick while a state lasts (the server is a standby): said at info when
 * the state begins, and when it ends, not at each tick. A job keeps one; the scheduler counts each skip.
 */
import type { Logger } from '../log/logger.js';
import type { JobOutcome, SkipReason } from './scheduler.js';

export class StateSkip {
  #state: SkipReason | undefined;

  constructor(private readonly job: string) {}

  /** This tick is skipped for `reason`: logged when the state begins, until it changes. */
  skip(reason: SkipReason, log: Logger, message: string): JobOutcome {
    if (this.#state !== reason) {
      this.#state = reason;
      log.info({ job: this.job, reason }, `${message}; said once, until it changes`);
    }
    return { kind: 'skipped', reason };
  }

  /** The job runs again: the state it was skipped for has ended (said once, if there was one). */
  clear(log: Logger, message: string): void {
    const was = this.#state;
    if (was === undefined) return;
    this.#state = undefined;
    log.info({ job: this.job, was }, message);
  }
}
