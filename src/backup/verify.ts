/**
 * The restore drill: the newest good backup is restored into a scratch database (created, then
 * dropped), its row counts compared with the manifest's, and the result recorded in the store
 * beside the backup (<key>.verify-<time>-<run>.json, a new one each drill). A backup nobody has restored is a hope, not a backup.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Config } from '../config/load.js';
import { systemIdentifier, withClusterFact } from '../db/cluster.js';
import { currentUrl } from '../db/url-file.js';
import { DbPool } from '../db/pool.js';
import { errorMessage, OperatorError } from '../core/errors.js';
import { unavailableError } from '../db/unavailable.js';
import { advisoryLock, advisoryUnlock, tryAdvisoryLock } from '../db/advisory-lock.js';
import type { Logger } from '../log/logger.js';
import { backupReader } from './backup-identity.js';
import type { Catalog } from './catalog.js';
import type { VerifyRecord } from './manifest.js';
import type { BackupMetrics } from './metrics.js';
import { printable, verifyKey } from './naming.js';
import { RESTORE_SESSION_SQL } from './psql-guard.js';
import { MissingRoleError, OwnershipError, resolveBackup, restoreBackup } from './restore.js';
import { listGlobals } from './globals-catalog.js';
import { restoreGlobals } from './globals-restore.js';
import { globalsFor } from './globals-retention.js';
import { parseTableName, quotedTableName } from './table-name.js';

/** Scratch databases of drills are named so; the clean-up of leftovers looks for them. */
const SCRATCH_PREFIX = 'pgmaintd_verify_';

export interface VerifyDeps {
  config: Config;
  catalog: Catalog;
  metrics?: BackupMetrics;
  logger: Logger;
}

export async function runVerification(
  deps: VerifyDeps,
  database: string,
  opts: { signal?: AbortSignal; key?: string; allowOtherCluster?: boolean } = {},
): Promise<VerifyRecord> {
  const { config, catalog } = deps;
  const log = deps.logger.child({ job: 'verify', database, runId: randomBytes(4).toString('hex') });
  const backup = await resolveBackup(
    catalog,
    opts.key,
    database,
    {
      allowOtherCluster: opts.allowOtherCluster === true,
      sourceCluster: opts.key ? undefined : await withClusterFact(config.db, deps.logger, systemIdentifier),
    },
    log,
  ).catch((err: unknown) => {
    deps.metrics?.verifyRuns.inc({ database, result: 'failure' });
    throw err;
  });
  // an encrypted backup with no identity to open it is this host's problem, not the backup's: said,
  // never recorded as a failed drill, and no scratch database is made for it
  await backupReader(backup, config.backup.encryption.identityFile).catch((err: unknown) => {
    deps.metrics?.verifyRuns.inc({ database, result: 'failure' });
    throw err;
  });
  // the drill follows DATABASE_URL_FILE as the other pools do (a failover moves the server)
  const serverUrl = config.verify.url ?? currentUrl(config.db).url;
  const setting = config.verify.url ? 'VERIFY_DATABASE_URL' : 'DATABASE_URL';
  const scratch = `${SCRATCH_PREFIX}${randomBytes(5).toString('hex')}`;
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
  let session: pg.PoolClient | undefined;
  let created = false;
  try {
    // A drill that cannot start says nothing about the backup: it is reported, not recorded.
    try {
      session = await admin.connect();
      // idle while the restore runs, and holding the drill's lock: no inherited timeout may end it
      await session.query(RESTORE_SESSION_SQL);
      await dropLeftovers(session, log);
      // held for the whole drill: a later drill's clean-up leaves this scratch database alone
      await advisoryLock(session, scratch);
      await session.query(`CREATE DATABASE ${pg.escapeIdentifier(scratch)}`);
      created = true;
    } catch (err) {
      deps.metrics?.verifyRuns.inc({ database, result: 'failure' });
      throw (
        unavailableError(err, admin.description, setting) ??
        new OperatorError(
          `cannot create the scratch database for the drill on ${admin.description}: ${errorMessage(err)}`,
          {
            hint: 'grant CREATEDB to the pg-maintd role, or set VERIFY_DATABASE_URL to a server where it may create databases',
            cause: err,
          },
        )
      );
    }
    log.info({ key: backup.key, scratch }, 'restore drill started');
    const scratchUrl = new URL(serverUrl);
    scratchUrl.pathname = `/${scratch}`;
    const restore = () =>
      restoreBackup({
        catalog,
        logger: deps.logger,
        ssl: config.db.ssl,
        clientBinDir: config.backup.clientBinDir,
        spoolDir: config.backup.spoolDir,
        identityFile: config.backup.encryption.identityFile,
        key: backup.key,
        targetUrl: scratchUrl.toString(),
        // only a superuser may create it, and it holds no data: a drill need not restore it
        skipExtensions: ['pg_stat_statements'],
        // a drill checks the data; its role (CREATEDB only) cannot become the owners. pg_restore can
        // leave them out; a plain script that holds them is restored as it is (see below)
        noOwner: backup.manifest.format === 'custom',
        signal: opts.signal,
      });
    let notOwner: OwnershipError | undefined;
    await restore()
      .catch(async (err: unknown) => {
        // the scratch server lacks a role the dump names (a drill on another server than the one
        // backed up): the globals of the backup's run create it there, then the restore runs again
        // (the failed one rolled back: the scratch database is empty)
        if (!(err instanceof MissingRoleError)) throw err;
        // roles belong to the whole server: on the cluster backed up (no VERIFY_DATABASE_URL elsewhere)
        // a role it lacks was dropped there since, and a drill must not bring it back (with its LOGIN,
        // or its password with BACKUP_GLOBALS_PASSWORDS). Unknown counts as the same cluster
        const server = await systemIdentifier(session!).catch(() => undefined);
        const m = backup.manifest;
        const backedUp = 'systemIdentifier' in m ? m.systemIdentifier : undefined;
        if (!config.verify.url || server === undefined || server === backedUp) {
          log.warn(
            { key: backup.key, role: err.role },
            "the drill's server is the cluster backed up and lacks a role the backup names (dropped since): its globals are not restored there",
          );
          throw err;
        }
        const globals = globalsFor(backup, (await listGlobals(catalog)).good);
        if (!globals) throw err;
        log.info(
          { key: backup.key, role: err.role, globals: globals.key },
          "the scratch server lacks a role the backup names: restoring the globals of the backup's run there first",
        );
        await restoreGlobals({
          catalog,
          logger: deps.logger,
          ssl: config.db.ssl,
          clientBinDir: config.backup.clientBinDir,
          spoolDir: config.backup.spoolDir,
          identityFile: config.backup.encryption.identityFile,
          key: globals.key,
          targetUrl: scratchUrl.toString(),
          signal: opts.signal,
        });
        await restore();
      })
      .catch((err: unknown) => {
        // a plain dump that keeps its owners, restored by a role that may not act as them: the drill
        // cannot tell anything of the backup, and says what would let it
        if (!(err instanceof OwnershipError) || backup.manifest.format !== 'plain') throw err;
        notOwner = err;
      });
    const counted = new DbPool(
      {
        url: scratchUrl.toString(),
        ssl: config.db.ssl,
        pool: { min: 0, max: 1, idleTimeoutMs: 1000, acquireTimeoutMs: 30_000 },
      },
      // a count of a big table must not die of a statement_timeout the role or database sets
      { name: 'verify-count', logger: deps.logger, statementTimeoutMs: 0, lockTimeoutMs: 0 },
    );
    const mismatches: VerifyRecord['mismatches'] = [];
    let compared = 0;
    try {
      if (!notOwner)
        for (const [table, expected] of Object.entries(backup.manifest.rowCounts)) {
          if (!expected.exact) continue;
          // the manifest's schema admits only qualified names; each reaches SQL quoted, never as written
          const name = parseTableName(table);
          if (!name) throw new Error(`the manifest names a table "${table}" that is not a qualified name`);
          compared++;
          const actual = await counted
            .query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${quotedTableName(name)}`)
            .then((r) => Number(r.rows[0]!.n))
            .catch(() => null);
          if (actual !== expected.rows) mismatches.push({ table, expected: expected.rows, actual });
        }
    } finally {
      await counted.stop();
    }
    const tables = Object.keys(backup.manifest.rowCounts).length;
    const inconclusive = notOwner
      ? ownershipReason(notOwner.role)
      : compared === 0
        ? tables === 0
          ? 'the backup holds no table to compare'
          : `none of its ${tables} table(s) has an exact row count in the manifest (each is over BACKUP_ROW_COUNT_MAX_TABLE_SIZE): the restore ran, but nothing was compared`
        : undefined;
    record = {
      key: backup.key,
      ok: mismatches.length === 0 && !inconclusive,
      result: mismatches.length ? 'failed' : inconclusive ? 'inconclusive' : 'ok',
      ...(inconclusive ? { reason: inconclusive } : {}),
      verifiedAt: new Date().toISOString(),
      durationSeconds: (performance.now() - started) / 1000,
      tablesCompared: compared,
      mismatches,
    };
  } catch (err) {
    if (opts.signal?.aborted || !created) throw err; // a shutdown is not a verdict on the backup
    record = {
      key: backup.key,
      ok: false,
      result: 'failed',
      verifiedAt: new Date().toISOString(),
      durationSeconds: (performance.now() - started) / 1000,
      tablesCompared: 0,
      mismatches: [],
      error: errorMessage(err),
    };
  } finally {
    if (created && session)
      await session
        .query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(scratch)} WITH (FORCE)`)
        .catch((e: unknown) =>
          log.warn(
            { err: { message: errorMessage(e) }, scratch },
            'dropping the scratch database failed; the next drill drops it',
          ),
        );
    session?.release(true); // ends the session and its lock
    await admin.stop();
  }
  if (catalog.signer) record = catalog.signer.sign(record);
  // a new object for every drill (nothing is ever rewritten): readers take the newest they trust
  await catalog.storage.putSmall(
    verifyKey(backup.key, new Date(record.verifiedAt), randomBytes(4).toString('hex')),
    JSON.stringify(record, null, 2),
  );
  deps.metrics?.verifyRuns.inc({
    database,
    result: record.ok ? 'success' : record.result === 'inconclusive' ? 'inconclusive' : 'failure',
  });
  await deps.metrics?.refresh(catalog, database);
  if (record.ok)
    log.info(
      { key: backup.key, tablesCompared: record.tablesCompared, durationSeconds: record.durationSeconds },
      'restore drill passed',
    );
  else if (record.result === 'inconclusive')
    log.warn({ key: backup.key, reason: record.reason }, 'restore drill INCONCLUSIVE: nothing was compared');
  else
    log.error(
      { key: backup.key, mismatches: record.mismatches, error: record.error },
      'restore drill FAILED',
    );
  return record;
}

/** Why a drill of a plain dump that keeps its owners restored nothing, and what lets the next one. */
function ownershipReason(role: string): string {
  return `the plain dump gives its objects to the role "${printable(role)}" (BACKUP_OWNERSHIP=keep), and the drill's role may not act as it: nothing was restored or compared. Take dumps with BACKUP_FORMAT=custom (drills restore them without owners), or BACKUP_OWNERSHIP=omit, or run drills as a superuser of another server (VERIFY_DATABASE_URL)`;
}

/**
 * Scratch databases of drills that could not drop theirs (the server went away, the process was
 * killed). A drill holds an advisory lock named after its scratch database while it runs, so one
 * whose lock is free is a leftover; a drill running elsewhere keeps its database.
 */
async function dropLeftovers(session: pg.PoolClient, log: Logger): Promise<void> {
  const r = await session.query<{ name: string }>(
    `SELECT datname AS name FROM pg_database WHERE datname LIKE $1 ORDER BY 1`,
    [`${SCRATCH_PREFIX.replace(/_/g, '\\_')}%`],
  );
  for (const { name } of r.rows) {
    if (!(await tryAdvisoryLock(session, name))) continue;
    try {
      await session.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      log.warn({ scratch: name }, 'dropped the scratch database an earlier drill left behind');
    } catch (err) {
      log.warn(
        { scratch: name, err: { message: errorMessage(err) } },
        'could not drop a leftover scratch database',
      );
    } finally {
      await advisoryUnlock(session, name);
    }
  }
}
