/**
 * SIGINT/SIGTERM during a one-shot command: the first aborts the work's signal (its work in flight
 * is cancelled and rolled back) and says so; a second exits at once with 130/143. With `command`,
 * work that fails after a signal ends as "interrupted" (exit 130/143), whatever failed it.
 */
import { interruptedError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { Logger } from '../log/logger.js';

export async function withSignalAbort<T>(
  logger: Logger,
  aborting: string,
  fn: (signal: AbortSignal) => Promise<T>,
  command?: string,
): Promise<T> {
  const abort = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (received) process.exit(sig === 'SIGINT' ? EXIT.FORCED_SIGINT : EXIT.FORCED_SIGTERM);
    received = sig;
    logger.warn({ signal: sig }, `${aborting} (send again to exit at once)`);
    abort.abort(new Error(`received ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(abort.signal);
  } catch (err) {
    if (received && command) throw interruptedError(command, received, err);
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
