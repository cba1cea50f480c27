/** Every long-running part has start() and stop(); both are safe to call twice, and concurrently. */

export interface Component {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export abstract class Service implements Component {
  abstract readonly name: string;
  #started: Promise<void> | undefined;
  #stopped: Promise<void> | undefined;

  start(): Promise<void> {
    if (this.#stopped) return Promise.reject(new Error(`${this.name}: start() after stop()`));
    this.#started ??= this.onStart();
    return this.#started;
  }

  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      if (!this.#started) return;
      this.interruptStart(); // a start still waiting (for a database, a lock) gives up now
      await this.#started.catch(() => undefined); // a failed start still gets its cleanup
      await this.onStop();
    })();
    return this.#stopped;
  }

  get running(): boolean {
    return this.#started !== undefined && this.#stopped === undefined;
  }

  get stopping(): boolean {
    return this.#stopped !== undefined;
  }

  /** Called when stop() comes while start() may still be running; a long start should end soon after. */
  protected interruptStart(): void {}

  protected abstract onStart(): Promise<void>;
  protected abstract onStop(): Promise<void>;
}
