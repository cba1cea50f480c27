// The README's first command: `pg-maintd demo` starts a throwaway cluster, serves, backs up, and
// cleans everything up on Ctrl-C.
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnCli, waitFor } from '../support/daemon.js';

describe('pg-maintd demo', () => {
  it('runs the daemon on a throwaway cluster, takes a first backup, and stops cleanly on SIGINT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgmaintd-demo-'));
    const demo = spawnCli(['demo'], { HTTP_PORT: '0', BACKUP_DIR: dir, LOG_LEVEL: 'info' });
    try {
      const out = await waitFor(
        async () => demo.output(),
        (o) => /^ {2}backup {4}\S+/m.test(o),
        60_000,
        100,
      );
      const metricsUrl = /metrics {3}(http:\/\/\S+\/metrics)/.exec(out)![1]!;
      const base = metricsUrl.replace(/\/metrics$/, '');
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      const metrics = await (await fetch(metricsUrl)).text();
      expect(metrics).toMatch(/^pgmaintd_backup_stored\{database="postgres"\} 1$/m);
      const backupPath = /^ {2}backup {4}(\S+)/m.exec(out)![1]!;
      expect(backupPath.startsWith(dir)).toBe(true);
      expect(existsSync(backupPath)).toBe(true);
      expect(existsSync(`${backupPath}.manifest.json`)).toBe(true);
      const dataDir = demo.lines().find((l) => l.msg.startsWith('demo: throwaway'))!.dataDir as string;
      expect(existsSync(dataDir)).toBe(true);

      demo.child.kill('SIGINT');
      expect((await demo.exited).code).toBe(0);
      expect(existsSync(dataDir)).toBe(false); // the cluster is removed
      expect(readdirSync(join(dir, 'postgres')).filter((f) => f.includes('.partial-'))).toEqual([]);
    } finally {
      demo.child.kill('SIGKILL');
    }
  });
});
