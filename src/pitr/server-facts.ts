/**
 * What a base backup records about the server and reads from pg_basebackup's own files: the cluster's
 * identity and version, its WAL segment size, its clock, that it has no tablespace a single tar
 * could not hold; backup_label's start position and timeline; backup_manifest's end position.
 */
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import type { DbPool } from '../db/pool.js';
import { serverClock, systemIdentifier } from '../db/cluster.js';
import { parseLsn, validSegmentBytes } from './wal-name.js';

type Queryable = Pick<DbPool, 'query'>;

export interface ServerFacts {
  systemIdentifier: string;
  serverVersion: string;
  serverVersionNum: number;
  segmentBytes: number;
  clockBefore: Date;
  clockAfter(pool: Queryable): Promise<Date>;
}

export async function serverFacts(pool: Queryable): Promise<ServerFacts> {
  const spaces = await pool.query<{ spcname: string }>(
    "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
  );
  if (spaces.rows.length > 0)
    throw new OperatorError(
      `base backup not taken: the server has tablespaces outside its data directory (${spaces.rows
        .map((r) => r.spcname)
        .slice(0, 10)
        .join(', ')}), which a single-stream base backup cannot hold`,
      {
        exitCode: EXIT.DATAERR,
        hint: 'move their objects to pg_default (ALTER TABLE ... SET TABLESPACE pg_default) and drop the tablespaces, or back this server up with another tool',
      },
    );
  const r = await pool.query<{ version: string; num: string; seg: string; unit: string | null }>(
    `SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num,
            setting AS seg, unit FROM pg_settings WHERE name = 'wal_segment_size'`,
  );
  const row = r.rows[0]!;
  const segmentBytes = Number(row.seg) * (row.unit === '8kB' ? 8192 : row.unit === 'MB' ? 1 << 20 : 1);
  if (!validSegmentBytes(segmentBytes))
    throw new OperatorError(`the server reports a WAL segment size of ${row.seg} ${row.unit ?? ''}`, {
      exitCode: EXIT.DATAERR,
    });
  return {
    systemIdentifier: await systemIdentifier(pool),
    serverVersion: row.version.slice(0, 200),
    serverVersionNum: Number(row.num),
    segmentBytes,
    clockBefore: await serverClock(pool),
    clockAfter: (p) => serverClock(p),
  };
}

/** backup_label's "START WAL LOCATION: 0/2000028 (file ...)" and "START TIMELINE: 1". */
export function parseBackupLabel(text: string): { lsn: bigint; timeline: number } {
  const loc = /^START WAL LOCATION: ([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/m.exec(text);
  const tli = /^START TIMELINE: (\d+)$/m.exec(text);
  const lsn = loc ? parseLsn(loc[1]!) : undefined;
  const timeline = tli ? Number(tli[1]) : NaN;
  if (lsn === undefined || !Number.isInteger(timeline) || timeline < 1)
    throw new OperatorError("the base backup's backup_label does not name its start position and timeline", {
      exitCode: EXIT.DATAERR,
    });
  return { lsn, timeline };
}

/** The end of WAL the backup needs: the last "End-LSN" of backup_manifest's WAL-Ranges. */
export function parsePgManifestEnd(text: string): bigint {
  let ranges: unknown;
  try {
    ranges = (JSON.parse(text) as { 'WAL-Ranges'?: unknown })['WAL-Ranges'];
  } catch {
    ranges = undefined;
  }
  const last = Array.isArray(ranges) ? (ranges.at(-1) as { 'End-LSN'?: unknown } | undefined) : undefined;
  const end = typeof last?.['End-LSN'] === 'string' ? parseLsn(last['End-LSN']) : undefined;
  if (end === undefined)
    throw new OperatorError("the base backup's backup_manifest has no WAL-Ranges end position", {
      exitCode: EXIT.DATAERR,
    });
  return end;
}
