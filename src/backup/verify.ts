/**
 * The restore drill: the newest good backup is restored into a scratch database (created, then
 * dropped), its row counts compared with the manifest's, and the result recorded in the store
 * beside the backup (<key>.verify.json). A backup nobody has restored is a hope, not a backup.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Config } from '../config/load.js';
import { DbPool } from '../db/pool.js';
import { OperatorError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { Catalog } from './catalog.js';
import type { VerifyRecord } from './manifest.js';
import type { BackupMetrics } from './metrics.js';
import { VERIFY_SUFFIX } from './naming.js';
import { resolveBackup, restoreBackup } from './restore.js';

export interface VerifyDeps {
  config: Config;
  catalog: Catalog;
  metrics?: BackupMetrics;
  logger: Logger;
}

export async function runVerification(
  deps: VerifyDeps,
  database: string,
  opts: { signal?: AbortSignal; key?: string } = {},
): Promise<VerifyRecord> {
  const { config, catalog } = deps;
  const log = deps.logger.child({ job: 'verify', database, runId: randomBytes(4).toString('hex') });
  const backup = await resolveBackup(catalog, opts.key, database);
  const serverUrl = config.verify.url ?? config.db.url;
  const scratch = `pgmaintd_verify_${randomBytes(5).toString('hex')}`;
  const admin = new DbPool(
    {
      url: serverUrl,
      ssl: config.db.ssl,
      pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 },
    },
    { name: 'verify-admin', logger: deps.logger },
  );
  const started = performance.now();
  let record: VerifyRecord;
  try {
    try {
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(scratch)}`);
    } catch (err) {
      throw new OperatorError(
        `cannot create the scratch database for the drill on ${admin.description}: ${(err as Error).message}`,
        {
          hint: 'grant CREATEDB to the pg-maintd role, or set VERIFY_DATABASE_URL to a server where it may create databases',
          cause: err,
        },
      );
    }
    log.info({ key: backup.key, scratch }, 'restore drill started');
    const scratchUrl = new URL(serverUrl);
    scratchUrl.pathname = `/${scratch}`;
    await restoreBackup({
      catalog,
      logger: deps.logger,
      ssl: config.db.ssl,
      clientBinDir: config.backup.clientBinDir,
      key: backup.key,
      targetUrl: scratchUrl.toString(),
      // only a superuser may create it, and it holds no data: a drill need not restore it
      skipExtensions: ['pg_stat_statements'],
      signal: opts.signal,
    });
    const counted = new DbPool(
      {
        url: scratchUrl.toString(),
        ssl: config.db.ssl,
        pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 },
      },
      { name: 'verify-count', logger: deps.logger },
    );
    const mismatches: VerifyRecord['mismatches'] = [];
    let compared = 0;
    try {
      for (const [table, expected] of Object.entries(backup.manifest.rowCounts)) {
        if (!expected.exact) continue;
        compared++;
        const actual = await counted
          .query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${table}`)
          .then((r) => Number(r.rows[0]!.n))
          .catch(() => null);
        if (actual !== expected.rows) mismatches.push({ table, expected: expected.rows, actual });
      }
    } finally {
      await counted.stop();
    }
    record = {
      key: backup.key,
      ok: mismatches.length === 0,
      verifiedAt: new Date().toISOString(),
      durationSeconds: (performance.now() - started) / 1000,
      tablesCompared: compared,
      mismatches,
    };
  } catch (err) {
    record = {
      key: backup.key,
      ok: false,
      verifiedAt: new Date().toISOString(),
      durationSeconds: (performance.now() - started) / 1000,
      tablesCompared: 0,
      mismatches: [],
      error: (err as Error).message,
    };
    if (opts.signal?.aborted) throw err; // a shutdown is not a verdict on the backup
  } finally {
    await admin
      .query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(scratch)} WITH (FORCE)`)
      .catch((e: unknown) =>
        log.warn({ err: e, scratch }, 'dropping the scratch database failed; drop it by hand'),
      );
    await admin.stop();
  }
  await catalog.storage.putSmall(backup.key + VERIFY_SUFFIX, JSON.stringify(record, null, 2));
  deps.metrics?.verifyRuns.inc({ database, result: record.ok ? 'success' : 'failure' });
  await deps.metrics?.refresh(catalog, database);
  if (record.ok)
    log.info(
      { key: backup.key, tablesCompared: record.tablesCompared, durationSeconds: record.durationSeconds },
      'restore drill passed',
    );
  else
    log.error(
      { key: backup.key, mismatches: record.mismatches, error: record.error },
      'restore drill FAILED',
    );
  return record;
}
