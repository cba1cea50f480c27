/** Builds the backup dependencies the way the daemon does, from a config made of test settings. */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { Registry } from 'prom-client';
import type { BackupDeps } from '../../src/backup/backup.js';
import { catalogFor } from '../../src/backup/catalog-for.js';
import { BackupMetrics } from '../../src/backup/metrics.js';
import { createStorage } from '../../src/backup/storage/index.js';
import { loadConfig } from '../../src/config/load.js';
import { serverClock, withClusterFact } from '../../src/db/cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { tempDir } from './temp.js';

export interface TestDeps extends BackupDeps {
  registry: Registry;
  dir: string;
  /** What retention needs besides: the clock tolerance and the database server's clock. */
  clockToleranceMs: number;
  databaseClock: () => Promise<Date | undefined>;
}

export const noDefaults = () => tempDir('pgmaintd-nodefaults-');

export async function backupDeps(env: Record<string, string>): Promise<TestDeps> {
  const dir = tempDir('pgmaintd-backups-');
  const { config } = loadConfig({
    env: { DB_SSL_MODE: 'disable', BACKUP_DIR: dir, BACKUP_COMPRESSION_THREADS: '2', ...env },
    defaultsDir: noDefaults(),
  });
  const storage = await createStorage(config);
  const registry = new Registry();
  const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent', format: 'json' });
  return {
    config,
    storage,
    catalog: catalogFor(config, storage),
    metrics: new BackupMetrics(registry, config.backup.databases),
    logger,
    registry,
    dir,
    clockToleranceMs: config.backup.clockSkewToleranceMs,
    databaseClock: () => withClusterFact(config.db, logger, serverClock),
  };
}

/** The value of one series in a registry, or undefined. */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number | undefined> {
  const m = registry.getSingleMetric(name);
  if (!m) return undefined;
  const { values } = await m.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val));
  return hit?.value;
}

/**
 * Reads a stored object as the store serves it: its size and SHA-256, and what it gunzips to (all of
 * it, or its last 300 characters with `tail`, for big dumps). Fails when it does not gunzip.
 */
export async function readStored(
  body: AsyncIterable<unknown>,
  opts: { tail?: boolean } = {},
): Promise<{ size: number; sha256: string; text: string }> {
  const hash = createHash('sha256');
  let size = 0;
  let tail = '';
  const parts: Buffer[] = [];
  const gunzip = createGunzip();
  gunzip.on('data', (c: Buffer) =>
    opts.tail ? (tail = (tail + c.toString('latin1')).slice(-300)) : parts.push(c),
  );
  const ended = new Promise<void>((resolve, reject) => {
    gunzip.on('end', resolve);
    gunzip.on('error', reject);
  });
  for await (const chunk of body) {
    const b = chunk as Buffer;
    hash.update(b);
    size += b.length;
    if (!gunzip.write(b)) await new Promise((r) => gunzip.once('drain', r));
  }
  gunzip.end();
  await ended;
  return { size, sha256: hash.digest('hex'), text: opts.tail ? tail : Buffer.concat(parts).toString('utf8') };
}

/** The drill records stored in a backup directory for the backup under `key` (one per drill), as paths. */
export function drillRecords(dir: string, key: string): string[] {
  const path = join(dir, key);
  const folder = dirname(path);
  const name = basename(path);
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .filter((f) => f.startsWith(`${name}.verify`) && f.endsWith('.json'))
    .sort()
    .map((f) => join(folder, f));
}
