/**
 * A real Prometheus (Debian's `prometheus` package) on loopback for the tests: it scrapes the given
 * targets every second, evaluates the given rule files every second, and answers the HTTP API.
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../../src/core/free-port.js';
import { waitFor } from './daemon.js';
import { tempDir } from './temp.js';

export interface TestPrometheus {
  url: string;
  /** GET /api/v1/<path> with query parameters; throws on an HTTP or API error. */
  api<T = unknown>(path: string, params?: Record<string, string>): Promise<T>;
  stop(): Promise<void>;
}

export async function startPrometheus(opts: {
  targets: string[];
  ruleFiles?: string[];
}): Promise<TestPrometheus> {
  const bin = spawnSync('prometheus', ['--version']);
  if (bin.error) throw new Error('prometheus is missing: apt-get install prometheus (.ci/run does)');
  const dir = tempDir('pgmaintd-prom-');
  const port = await freePort();
  writeFileSync(
    join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '900ms' },
      rule_files: opts.ruleFiles ?? [],
      scrape_configs: [
        {
          job_name: 'pg-maintd',
          honor_labels: true, // pg-maintd exports metrics with a `job` label of its own
          static_configs: [{ targets: opts.targets }],
        },
      ],
    }),
  );
  const child = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<T> => {
    const res = await fetch(`${url}/api/v1/${path}?${new URLSearchParams(params).toString()}`);
    const body = (await res.json()) as { status: string; data: T; error?: string; errorType?: string };
    if (body.status !== 'success')
      throw new Error(`${path} ${JSON.stringify(params)}: ${body.errorType}: ${body.error}`);
    return body.data;
  };
  try {
    await waitFor(
      async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.status,
      (s) => s === 200,
      30_000,
      100,
    );
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`prometheus did not start: ${(err as Error).message}\n${log}`);
  }
  return {
    url,
    api,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
