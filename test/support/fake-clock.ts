/**
 * A process with a wall clock of its own: libfaketime (Debian's `faketime` package) preloaded, the
 * wall clock moved by `offset` ("+40d", "-40d"), the monotonic clock left alone. Only the process
 * and its children see it; the kernel (file times), the store and the database keep the real time.
 */
import { existsSync } from 'node:fs';

const LIBRARY = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

export function fakeClockEnv(offset: string): Record<string, string> {
  if (!existsSync(LIBRARY))
    throw new Error(`libfaketime is missing (${LIBRARY}): apt-get install faketime (.ci/run does)`);
  return { LD_PRELOAD: LIBRARY, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_NO_CACHE: '1' };
}
