/**
 * The PITR drill: the newest base backup and the WAL after it restored into a scratch directory to a
 * recent time the stored WAL provably reaches, started on a free loopback port, and asked for the
 * newest heartbeat row (the archiver writes one every PITR_HEARTBEAT_INTERVAL, numbered). The target
 * is one microsecond before the newest heartbeat on the server, whose time is later than the commit
 * of the heartbeat numbered before it: the drill passes when the restored row is exactly that one.
 * That proves the store brings the cluster back to the last commit before a point, not just to some
 * point, however late a busy host wrote its heartbeats; how far before the target the row lies is
 * measured and recorded. Its record goes to the store.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdentityError } from '../backup/encryption.js';
import { errorMessage } from '../core/errors.js';
import { systemIdentifier, serverClock } from '../db/cluster.js';
import { DbPool } from '../db/pool.js';
import { LEASE_SESSION } from '../db/lease.js';
import { parsePitrDrillRecord, type PitrDrillRecord } from './base-manifest.js';
import type { PitrMetrics } from './metrics.js';
import { listPitr, loadHistories } from './pitr-catalog.js';
import { recoveryTime, restorePitr, type PitrDeps } from './restore.js';
import { restoreWindow, usableBases } from './restore-plan.js';
import { drillKey } from './store-keys.js';
import { HEARTBEAT_TABLE } from './heartbeat.js';
import { sleep } from './sleep.js';
import { readStoredPosition } from './stored-position.js';
import { LONG_PAGE_HEADER_BYTES } from './wal-header.js';
import { formatLsn, parseLsn } from './wal-name.js';
import type { WalStore } from './wal-object.js';

export interface DrillDeps extends PitrDeps {
  metrics?: PitrMetrics | undefined;
}

const MARGIN_MS = 2000;

export async function runPitrDrill(deps: DrillDeps, o: { signal: AbortSignal }): Promise<PitrDrillRecord> {
  const log = deps.logger.child({ job: 'pitr-drill' });
  const startedAt = new Date();
  const t0 = performance.now();
  const pool = new DbPool(deps.config.db, {
    name: 'pitr-drill',
    logger: deps.logger,
    max: 1,
    min: 0,
    ...LEASE_SESSION,
  });
  let sysid: string;
  let now: Date;
  let anchor: Anchor | undefined;
  try {
    sysid = await systemIdentifier(pool);
    now = await serverClock(pool);
    anchor = await heartbeatAnchor(pool);
  } finally {
    await pool.stop();
  }
  const heartbeatMs = deps.config.pitr.heartbeatIntervalMs;
  const listing = await listPitr(deps.storage, sysid, { signer: deps.signer });
  const histories = await loadHistories(deps.storage, listing, { signer: deps.signer });
  const base = usableBases(listing, histories)[0];
  const window = restoreWindow(listing, histories);
  // Recovery stops at the first commit after the target, and fails when the WAL ends before one: a
  // commit after the target must be in the store. The newest heartbeat on the server is such a
  // commit, and it lies before the server's insert position read with it: the target is the
  // microsecond before that heartbeat's time, once the store holds WAL up to that position. (A target
  // from the time the newest WAL object was stored is not enough: on a busy host that object can end
  // seconds before it was stored, and no commit after the target would be there.)
  let target: Date | undefined;
  let micros = 0;
  let expectSeq: bigint | undefined;
  // a heartbeat that has stopped (no daemon writes it) anchors nothing: the rule below says so
  if (anchor && base && now.getTime() - Number(anchor.atMicros / 1000n) <= 3 * heartbeatMs + 10_000) {
    const waitMs = 2 * deps.config.pitr.partialUploadIntervalMs + 30_000;
    if (
      await storeReaches(
        { storage: deps.storage, sysid, signer: deps.signer },
        base.base.manifest.segmentBytes,
        anchor.lsn,
        waitMs,
        o.signal,
      )
    ) {
      const us = anchor.atMicros - 1n;
      target = new Date(Number(us / 1000n));
      micros = Number(us % 1000n);
      expectSeq = anchor.seq !== undefined && anchor.seq > 0n ? anchor.seq - 1n : undefined;
    } else
      log.info(
        { lsn: formatLsn(anchor.lsn), waitedSeconds: waitMs / 1000 },
        'the store does not hold the WAL of the newest heartbeat yet: the target is taken from when the newest WAL object was stored',
      );
  }
  if (!target) {
    const byClock = now.getTime() - 2 * deps.config.pitr.partialUploadIntervalMs - MARGIN_MS;
    const byStore = (window.latest?.getTime() ?? 0) - heartbeatMs - MARGIN_MS;
    target = new Date(Math.floor(Math.min(byClock, byStore) / 1000) * 1000);
  }
  let result: PitrDrillRecord['result'] = 'inconclusive';
  let reason: string | undefined;
  let newest: Date | undefined;
  let behindMicros = 0n;
  let foundSeq: bigint | undefined;
  let fetched = 0;
  if (!base) reason = 'no base backup with the WAL it needs';
  else if (target.getTime() < base.base.consistentAt.getTime())
    reason = `the stored WAL does not reach ${MARGIN_MS / 1000} s past the newest base backup's end yet`;
  else {
    const dir = await mkdtemp(join(tmpdir(), 'pgmaintd-drill-'));
    try {
      const r = await restorePitr(deps, {
        dataDir: dir,
        sysid,
        target: { kind: 'time', time: target, micros },
        start: true,
        signal: o.signal,
        job: 'pitr-drill',
      });
      fetched = r.prefetched;
      let c: Awaited<ReturnType<NonNullable<typeof r.server>['connect']>> | undefined;
      let found: Recovered | undefined;
      try {
        c = await r.server!.connect();
        found = await recoveredHeartbeat(c);
        if (!found) reason = 'the heartbeat table is empty at the target';
      } catch (err) {
        reason =
          (err as { code?: string }).code === '42P01'
            ? 'no heartbeat table (pgmaintd.pitr_heartbeat) at the target yet'
            : `reading the heartbeat failed: ${errorMessage(err)}`;
      } finally {
        await c?.end().catch(() => undefined);
        await r.server!.stop('immediate');
      }
      if (found) {
        newest = new Date(Number(found.atMicros / 1000n));
        foundSeq = found.seq;
        const targetMicros = BigInt(target.getTime()) * 1000n + BigInt(micros);
        behindMicros = targetMicros - found.atMicros;
        ({ result, reason } = judge(behindMicros, found.seq, expectSeq, heartbeatMs));
        if (result === 'ok' && behindMicros > BigInt(heartbeatMs + 1000) * 1000n)
          log.info(
            { behindSeconds: Number(behindMicros) / 1e6, heartbeatIntervalSeconds: heartbeatMs / 1000 },
            'the heartbeats around the target were written further apart than PITR_HEARTBEAT_INTERVAL (a busy host or database); the restore itself was exact',
          );
      }
    } catch (err) {
      if (o.signal.aborted) throw err;
      // encrypted backups or WAL and no identity here to open them (restorePitr checks before it
      // writes): this host's problem, not the store's. Said, and never recorded as a failed drill
      if (err instanceof IdentityError) {
        log.error({ err: { message: err.message } }, 'PITR drill cannot run on this host');
        throw err;
      }
      result = 'failed';
      reason = errorMessage(err).slice(0, 1900);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const key = drillKey(sysid, startedAt, randomBytes(4).toString('hex'));
  let rec: PitrDrillRecord = {
    recordVersion: 1,
    kind: 'pitr-drill',
    key,
    systemIdentifier: sysid,
    baseBackupKey: base?.base.key ?? '-',
    result,
    ...(reason ? { reason: oneLine(reason) } : {}),
    target: target.toISOString(),
    ...(base ? { recoveryTargetTime: recoveryTime(target, micros) } : {}),
    ...(foundSeq !== undefined ? { heartbeatNumber: foundSeq.toString() } : {}),
    ...(expectSeq !== undefined ? { expectedHeartbeatNumber: expectSeq.toString() } : {}),
    ...(newest
      ? {
          newestHeartbeat: newest.toISOString(),
          precisionSeconds: Number(behindMicros) / 1e6,
        }
      : {}),
    heartbeatIntervalSeconds: heartbeatMs / 1000,
    walFilesFetched: fetched,
    startedAt: startedAt.toISOString(),
    durationSeconds: (performance.now() - t0) / 1000,
  };
  if (deps.signer) rec = deps.signer.sign(rec);
  const text = JSON.stringify(rec, null, 2);
  parsePitrDrillRecord(text, key);
  await deps.storage.putSmall(key, text);
  const m = deps.metrics;
  if (m) {
    const at = Date.now() / 1000;
    m.drillRuns.inc({ result });
    m.drillLastRun.set(at);
    if (result === 'ok') m.drillLastSuccess.set(at);
    for (const r of ['ok', 'failed', 'inconclusive'] as const)
      m.drillLastResult.set({ result: r }, r === result ? 1 : 0);
    if (rec.precisionSeconds !== undefined) m.drillPrecision.set(rec.precisionSeconds);
  }
  log[result === 'ok' ? 'info' : 'warn'](
    { key, result, reason, target: rec.target, newestHeartbeat: rec.newestHeartbeat },
    'PITR drill done',
  );
  return rec;
}

/** A heartbeat's time in microseconds since 1970, and its number (none where it does not count). */
interface Recovered {
  atMicros: bigint;
  seq: bigint | undefined;
}

/** The newest heartbeat on the server, and the insert position read with it (after its commit). */
interface Anchor extends Recovered {
  lsn: bigint;
}

// the time to the microsecond, exactly on every version (extract's float8 before 14 would round)
const MICROS_SQL = (col: string) =>
  `(pg_catalog.date_part('epoch', pg_catalog.date_trunc('second', ${col}))::bigint * 1000000
    + pg_catalog.date_part('microseconds', ${col})::bigint % 1000000)::text`;

// The number counts only where the heartbeat writer set it with the time (seq_at = at): not in a
// row an older writer, or anyone else, updated without numbering it. to_jsonb(h): a table from
// before the numbers has neither column, and that is no error.
const HEARTBEAT_SQL = `SELECT ${MICROS_SQL('h.at')} AS at,
                              CASE WHEN pg_catalog.to_jsonb(h) ->> 'seq_at' = pg_catalog.to_jsonb(h) ->> 'at'
                                   THEN pg_catalog.to_jsonb(h) ->> 'seq' END AS seq
                         FROM ${HEARTBEAT_TABLE} h WHERE h.id = 1`;

/** Undefined where there is no heartbeat (yet) or no insert position (a standby): the old rule. */
async function heartbeatAnchor(pool: DbPool): Promise<Anchor | undefined> {
  try {
    const r = await pool.query<{ at: string | null; seq: string | null; lsn: string }>(
      `SELECT hb.at, hb.seq, pg_catalog.pg_current_wal_insert_lsn()::text AS lsn
         FROM (SELECT 1) one LEFT JOIN (${HEARTBEAT_SQL}) hb ON true`,
    );
    const row = r.rows[0];
    const lsn = parseLsn(row?.lsn ?? '');
    if (!row?.at || lsn === undefined) return undefined;
    return { atMicros: BigInt(row.at), seq: bigintOrUndefined(row.seq), lsn };
  } catch {
    return undefined;
  }
}

async function recoveredHeartbeat(c: { query: DbPool['query'] }): Promise<Recovered | undefined> {
  const r = await c.query<{ at: string; seq: string | null }>(HEARTBEAT_SQL);
  const row = r.rows[0];
  return row ? { atMicros: BigInt(row.at), seq: bigintOrUndefined(row.seq) } : undefined;
}

function bigintOrUndefined(text: string | null | undefined): bigint | undefined {
  return text && /^-?\d{1,19}$/.test(text) ? BigInt(text) : undefined;
}

/**
 * Ok when the restored heartbeat is at or before the target and is the one numbered just before the
 * anchor. Without numbers (an older table, or no anchor) it must lie within one interval and a second
 * before the target, as measured.
 */
export function judge(
  behindMicros: bigint,
  seq: bigint | undefined,
  expectSeq: bigint | undefined,
  heartbeatMs: number,
): { result: PitrDrillRecord['result']; reason: string | undefined } {
  if (behindMicros < 0n)
    return {
      result: 'failed',
      reason: `a heartbeat ${(Number(-behindMicros) / 1e6).toFixed(6)} s after the target was recovered: recovery went past it`,
    };
  if (expectSeq !== undefined && seq !== undefined) {
    if (seq === expectSeq) return { result: 'ok', reason: undefined };
    return {
      result: 'failed',
      reason:
        seq > expectSeq
          ? `heartbeat number ${seq} was recovered, but the target lies before heartbeat ${expectSeq + 1n}: recovery went past it`
          : `heartbeat number ${seq} was recovered, but heartbeat ${expectSeq} committed before the target: recovery stopped ${expectSeq - seq} heartbeat(s) short of it`,
    };
  }
  if (behindMicros > BigInt(heartbeatMs + 1000) * 1000n)
    return {
      result: 'failed',
      reason: `the newest heartbeat recovered is ${(Number(behindMicros) / 1e6).toFixed(1)} s before the target, more than one PITR_HEARTBEAT_INTERVAL`,
    };
  return { result: 'ok', reason: undefined };
}

/** Whether the stored WAL reaches `lsn` within `waitMs` (archiving runs meanwhile). */
async function storeReaches(
  ws: WalStore,
  segmentBytes: number,
  lsn: bigint,
  waitMs: number,
  signal: AbortSignal,
): Promise<boolean> {
  // right after a segment switch the insert position is past the next segment's long page header
  // though nothing is written there yet: the end of the segment before is enough then
  const offset = lsn % BigInt(segmentBytes);
  const need = offset <= BigInt(LONG_PAGE_HEADER_BYTES) ? lsn - offset : lsn;
  const until = performance.now() + waitMs;
  for (;;) {
    const { end } = await readStoredPosition(ws, segmentBytes);
    if (end !== undefined && end >= need) return true;
    if (performance.now() > until || signal.aborted) return false;
    await sleep(1000, signal).catch(() => undefined);
  }
}

/** The record's reason is one line of printable text (its parser refuses control characters). */
function oneLine(text: string): string {
  return [...text].map((ch) => (ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f ? ' ' : ch)).join('');
}
