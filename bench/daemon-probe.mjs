/**
 * Preloaded into the pg-maintd process by bench:load and bench:soak (`node --import <this file>
 * bin/pg-maintd.js run`), so it measures from inside the daemon without any change to the product.
 * It does nothing unless PGMAINTD_BENCH_PROBE names a file, and nothing in worker threads (the
 * compression workers inherit the preload).
 *
 * Every second it appends one JSON line to that file:
 *   { t, lag: [...], late?: [[ms, cpuMs], ...] }
 *     t: Date.now(); lag: how late each tick of a 10 ms timer fired in that second, in ms (0 = on
 *     time). The raw samples, so the benchmark computes exact percentiles over any window.
 *     (prom-client's nodejs_eventloop_lag_p99_seconds cannot serve: its histogram is reset by every
 *     scrape, see bench/README.md.) late: for each tick at least 20 ms late, how late, and how much
 *     CPU time the main thread used meanwhile (/proc/thread-self/stat, 10 ms resolution): close to
 *     the delay means the loop was busy with its own work; near 0, the thread waited for a core.
 * With PGMAINTD_BENCH_GC_EVERY_MS and node's --expose-gc it also runs a full GC at that period and
 * appends { t, gc: { heapUsed, heapTotal, rss, external, arrayBuffers } } right after it: the heap
 * that is still reachable, without the garbage that happens to be waiting for collection.
 */
import { openSync, readFileSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setInterval } from 'node:timers';
import { isMainThread } from 'node:worker_threads';

const file = process.env.PGMAINTD_BENCH_PROBE;
if (isMainThread && file) {
  const fd = openSync(file, 'a');
  const TICK_MS = 10;
  const LATE_MS = 20;
  let lag = [];
  let late = [];
  let last = performance.now();
  let lastCpu = mainThreadCpuMs();
  setInterval(() => {
    const now = performance.now();
    const cpu = mainThreadCpuMs();
    const ms = Math.max(0, now - last - TICK_MS);
    lag.push(Math.round(ms * 100) / 100);
    // a late tick: was the main thread running meanwhile (its own work: JS, GC, a synchronous call)
    // or waiting for a core (the machine's other work)? CPU time in 10 ms clock ticks
    if (ms >= LATE_MS) late.push([Math.round(ms), cpu - lastCpu]);
    last = now;
    lastCpu = cpu;
  }, TICK_MS).unref();
  setInterval(() => {
    const line = JSON.stringify({ t: Date.now(), lag, ...(late.length ? { late } : {}) });
    lag = [];
    late = [];
    writeSync(fd, `${line}\n`);
  }, 1000).unref();
  const gcEvery = Number(process.env.PGMAINTD_BENCH_GC_EVERY_MS ?? 0);
  if (gcEvery > 0 && typeof globalThis.gc === 'function') {
    setInterval(() => {
      globalThis.gc();
      const m = process.memoryUsage();
      const gc = {
        heapUsed: m.heapUsed,
        heapTotal: m.heapTotal,
        rss: m.rss,
        external: m.external,
        arrayBuffers: m.arrayBuffers,
      };
      writeSync(fd, `${JSON.stringify({ t: Date.now(), gc })}\n`);
    }, gcEvery).unref();
  }
}

/** CPU time (user + system) of the calling thread in ms, at clock-tick (10 ms) resolution; NaN if unknown. */
function mainThreadCpuMs() {
  try {
    const st = readFileSync('/proc/thread-self/stat', 'utf8');
    const v = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(v[11]) + Number(v[12])) * 10;
  } catch {
    return NaN;
  }
}
