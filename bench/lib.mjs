/**
 * What the benchmarks share: failing with a usage error, timestamped log lines, and a cleanup that
 * also runs on Ctrl-C: running loads are stopped, child process groups signalled (SIGKILL after
 * `killWaitMs`), then the registered cleanup steps run, last registered first.
 */
import console from 'node:console';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';

export function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}

export const log = (msg) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

const cleanups = [];
/** Child processes started in their own process group (spawn with detached: true). */
export const liveChildren = new Set();
/** Running load generators (anything with stop()). */
export const liveLoads = new Set();
let cleaningUp;
let killWaitMs = 5000;

/** How long children get to exit after SIGTERM before SIGKILL (a draining daemon needs its grace). */
export function setKillWait(ms) {
  killWaitMs = ms;
}

export function onCleanup(fn) {
  cleanups.push(fn);
}

export async function cleanup() {
  cleaningUp ??= (async () => {
    for (const load of liveLoads) load.stop();
    for (const child of liveChildren) killGroup(child, 'SIGTERM');
    const until = Date.now() + killWaitMs;
    while ([...liveChildren].some((c) => c.exitCode === null && c.signalCode === null)) {
      if (Date.now() > until) {
        for (const child of liveChildren) killGroup(child, 'SIGKILL');
        break;
      }
      await sleep(100);
    }
    while (cleanups.length) {
      const fn = cleanups.pop();
      try {
        await fn();
      } catch (err) {
        console.error(`bench: cleanup step failed: ${err.message}`);
      }
    }
  })();
  return cleaningUp;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (cleaningUp) return;
    console.error(`\nbench: ${sig}: stopping what the benchmark started...`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}

/** Children run in their own process group, so a pipeline (bash, pg_dump, gzip) stops as one. */
export function killGroup(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Runs a benchmark's main(): a failure exits 1 with its stack (unless Ctrl-C caused it), and cleanup always runs. */
export async function runBench(main) {
  try {
    await main();
  } catch (err) {
    if (!cleaningUp) {
      console.error(`bench: ${err.stack ?? err}`);
      process.exitCode = 1;
    } // else Ctrl-C: the failure is the interruption itself
  } finally {
    await cleanup();
  }
}

/** Calls `onLine` with each JSON log line a child writes (pg-maintd with LOG_FORMAT=json); other lines are skipped. */
export function onJsonLines(stream, onLine) {
  let partial = '';
  stream.on('data', (d) => {
    partial += d;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      if (!line.startsWith('{')) continue;
      let parsed;
      try {
        parsed = JSON.parse(line);
      } catch {
        continue;
      }
      onLine(parsed);
    }
  });
}
