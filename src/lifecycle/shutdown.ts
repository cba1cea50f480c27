/**
 * Two-step shutdown. The first SIGTERM/SIGINT drains: stop taking work, finish or abort what is in
 * flight, close the server and the pools, exit 0. A second signal forces the exit at once (128 + the
 * signal number); so does the grace period running out (exit 124). An unhandled rejection or an
 * uncaught exception is logged and leads to the same orderly shutdown, with exit 70.
 */
import { constants } from 'node:os';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';
import type { Lifecycle } from './lifecycle.js';

export interface ShutdownOptions {
  lifecycle: Lifecycle;
  logger: Logger;
  graceMs: number;
  /** Called once when the drain starts (readiness turns 503, schedulers stop taking ticks). */
  onDrain?: () => void;
  exit?: (code: number) => void;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- process listeners take varied arguments
type Listener = (...args: any[]) => void;

export class ShutdownController {
  #draining = false;
  #handlers: Array<[string, Listener]> = [];
  constructor(private readonly o: ShutdownOptions) {}

  get draining(): boolean {
    return this.#draining;
  }

  install(): void {
    const onSignal = (signal: NodeJS.Signals) => {
      if (this.#draining) {
        this.o.logger.warn({ signal }, 'second signal: forcing exit now');
        this.#exit(128 + (constants.signals[signal] ?? 15));
        return;
      }
      void this.shutdown(`received ${signal}`, EXIT.OK);
    };
    const onRejection = (reason: unknown) => {
      this.o.logger.fatal({ err: reason }, 'unhandled promise rejection; shutting down');
      void this.shutdown('unhandled rejection', EXIT.SOFTWARE);
    };
    const onException = (err: Error) => {
      this.o.logger.fatal({ err }, 'uncaught exception; shutting down');
      void this.shutdown('uncaught exception', EXIT.SOFTWARE);
    };
    this.#on('SIGTERM', onSignal);
    this.#on('SIGINT', onSignal);
    this.#on('unhandledRejection', onRejection);
    this.#on('uncaughtException', onException);
  }

  uninstall(): void {
    for (const [event, fn] of this.#handlers) process.off(event, fn);
    this.#handlers = [];
  }

  async shutdown(reason: string, code: number): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    const { logger, graceMs, lifecycle } = this.o;
    logger.info({ reason, graceMs }, 'draining: finishing work in flight, then closing');
    const timer = setTimeout(() => {
      logger.error({ graceMs }, 'grace period expired before the drain finished; forcing exit');
      this.#exit(EXIT.GRACE_EXPIRED);
    }, graceMs);
    try {
      this.o.onDrain?.();
    } catch (err) {
      logger.error({ err }, 'drain hook failed');
    }
    await lifecycle.stopAll();
    clearTimeout(timer);
    logger.info({ reason, exitCode: code }, 'stopped');
    this.#exit(code);
  }

  #on(event: string, fn: Listener) {
    process.on(event, fn);
    this.#handlers.push([event, fn]);
  }

  #exit(code: number) {
    (this.o.exit ?? process.exit)(code);
  }
}
