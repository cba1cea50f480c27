// A scrape while the database is down, in both codings: the daemon answers from its cache at once,
// as it always has (pg_up 0, a failed collector's series dropped, never served stale), gzip for a
// scraper that accepts it, the same text once gunzipped, and promtool reads it.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { sample, startDaemon, waitFor } from '../support/daemon.js';
import { startPrivateCluster } from '../support/postgres.js';

let cluster: LocalCluster;
beforeAll(async () => {
  cluster = await startPrivateCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

/** promtool's naming lints on the names kept for postgres_exporter and prom-client compatibility. */
const NAMING_LINT =
  /^(pg_|nodejs_)\S* (non-counter metrics should not have "_total" suffix|counter metrics should have "_total" suffix|non-histogram and non-summary metrics should not have "_count" suffix)$/;

function get(
  port: number,
  acceptEncoding?: string,
): Promise<{ status: number; encoding?: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers = acceptEncoding ? { 'accept-encoding': acceptEncoding } : {};
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          encoding: res.headers['content-encoding'],
          body: Buffer.concat(chunks),
        }),
      );
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
  });
}

/** The text without the process and runtime families, which move by themselves between two scrapes. */
const steady = (text: string) =>
  text
    .split('\n')
    .filter(
      (l) =>
        !/^(# (HELP|TYPE) )?(process|nodejs)_/.test(l) &&
        !/^(# (HELP|TYPE) )?pgmaintd_db_pool_clients/.test(l),
    )
    .join('\n');

describe('/metrics while the database is down', () => {
  it('answers from the cache in both codings, the same text, pg_up 0, nothing stale', async () => {
    const d = await startDaemon({
      DATABASE_URL: cluster.url(),
      DB_SSL_MODE: 'disable',
      METRICS_INTERVAL: '1s',
      READYZ_INTERVAL: '200ms',
      BACKUP_SCHEDULE: 'off',
    });
    try {
      await waitFor(
        async () => gunzipSync((await get(d.port, 'gzip')).body).toString(),
        (t) => sample(t, 'pg_up') === 1 && /^pg_static\{/m.test(t),
        30_000,
        200,
      );
      await cluster.stopServer();
      try {
        const down = await waitFor(
          async () => gunzipSync((await get(d.port, 'gzip')).body).toString(),
          (t) =>
            sample(t, 'pg_up') === 0 &&
            sample(t, 'pg_scrape_collector_success', { collector: 'postmaster' }) === 0,
          30_000,
          200,
        );
        expect(down).not.toMatch(/^pg_static\{/m); // a failed collector's series are dropped, as before
        expect(sample(down, 'pgmaintd_build_info')).toBe(1);

        // the collectors keep polling (and failing) every second: a pair of scrapes with no poll
        // started or ended between them must be the same text; a pair with one may differ
        const polled = (text: string) =>
          `${sample(text, 'pg_exporter_scrapes_total')}/${sample(text, 'pg_exporter_last_scrape_duration_seconds')}`;
        let compared = 0;
        for (let i = 0; i < 200 && compared < 20; i++) {
          const gz = await get(d.port, 'gzip');
          const plain = await get(d.port);
          expect(gz.status).toBe(200);
          expect(gz.encoding).toBe('gzip');
          expect(plain.status).toBe(200);
          expect(plain.encoding).toBeUndefined();
          const text = gunzipSync(gz.body).toString();
          expect(sample(text, 'pg_up')).toBe(0);
          if (polled(text) !== polled(plain.body.toString())) continue;
          expect(steady(text)).toBe(steady(plain.body.toString()));
          compared++;
        }
        expect(compared).toBe(20);

        const run = spawnSync('promtool', ['check', 'metrics'], {
          input: gunzipSync((await get(d.port, 'gzip')).body),
          encoding: 'utf8',
        });
        expect(run.error, 'promtool is missing: apt-get install prometheus').toBeUndefined();
        const findings = `${run.stdout}${run.stderr}`.split('\n').filter(Boolean);
        expect(findings.filter((l) => !NAMING_LINT.test(l))).toEqual([]);
        expect(run.status === 0 || run.status === 3).toBe(true); // 3: lint findings only
      } finally {
        await cluster.startServer();
      }
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  });
});
