/**
 * wrk runs for bench/metrics.mjs: `wrk -t THREADS -c CONNECTIONS -d DURATION --latency` as a child in
 * its own process group (stopped with the benchmark), its report parsed: requests/s, the latency
 * percentiles it prints (50/75/90/99), non-2xx answers and socket errors.
 */
import { spawn } from 'node:child_process';
import { liveChildren } from './lib.mjs';

/** wrk's durations: 850.00us, 4.37ms, 1.02s, 2.00m. In ms. */
export function wrkMs(text) {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  if (!m) return NaN;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2]];
  return Number(m[1]) * scale;
}

/** Parses wrk's text report (run with --latency). */
export function parseWrk(out) {
  const pct = (p) => wrkMs(new RegExp(`^\\s+${p}%\\s+(\\S+)$`, 'm').exec(out)?.[1] ?? '');
  const requests = Number(/(\d+) requests in ([\d.]+\w+)/.exec(out)?.[1] ?? NaN);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(/^Requests\/sec:\s+([\d.]+)/m.exec(out)?.[1] ?? NaN),
    requests,
    seconds: wrkMs(/\d+ requests in ([\d.]+\w+)/.exec(out)?.[1] ?? '') / 1000,
    p50: pct(50),
    p75: pct(75),
    p90: pct(90),
    p99: pct(99),
    max: wrkMs(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m.exec(out)?.[1] ?? ''),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    errors: socket ? Number(socket[1]) + Number(socket[2]) + Number(socket[3]) : 0,
    timeouts: socket ? Number(socket[4]) : 0,
  };
}

/** One wrk run; `headers` as { name: value }. Resolves with the parsed report; throws when wrk fails. */
export function wrk(url, { duration, connections, threads = 2, timeoutS = 10, headers = {} }) {
  const args = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${duration}s`,
    `--timeout`,
    `${timeoutS}s`,
    '--latency',
  ];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', (e) => {
      liveChildren.delete(child);
      reject(new Error(`wrk: ${e.message} (apt-get install wrk)`));
    });
    child.on('close', (code) => {
      liveChildren.delete(child);
      if (code !== 0) reject(new Error(`wrk exited ${code}: ${err}${out}`));
      else resolve({ ...parseWrk(out), raw: out });
    });
  });
}
