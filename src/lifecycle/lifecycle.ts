/** Starts components in order and stops them in reverse order of acquisition (LIFO). */
import type { Logger } from '../log/logger.js';
import type { Component } from './service.js';

export class Lifecycle {
  #stack: Component[] = [];
  constructor(private readonly logger: Logger) {}

  /** Starts a component; its stop() is registered first, so a half-started one is still cleaned up. */
  async start<T extends Component>(component: T): Promise<T> {
    this.#stack.push(component);
    await component.start();
    return component;
  }

  /** Registers a cleanup for something acquired outside a component. */
  defer(name: string, fn: () => Promise<void> | void): void {
    this.#stack.push({ name, start: async () => undefined, stop: async () => fn() });
  }

  async stopAll(): Promise<void> {
    for (let c = this.#stack.pop(); c; c = this.#stack.pop()) {
      const t0 = performance.now();
      try {
        await c.stop();
        this.logger.debug({ component: c.name, ms: Math.round(performance.now() - t0) }, 'stopped');
      } catch (err) {
        this.logger.error({ component: c.name, err }, 'stop failed; continuing with the rest');
      }
    }
  }
}
