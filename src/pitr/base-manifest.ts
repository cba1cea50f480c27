/**
 * The records point-in-time recovery writes to the store, and their strict parsers: a base backup's
 * manifest (written after its data object is complete; a base backup without one is never used) and
 * a PITR drill's record. Everything read back is hostile until parsed here, as for dumps.
 */
import { z } from 'zod';
import { count, isoDate, issues, line, parseJson } from '../backup/manifest.js';
import { SignatureSchema } from '../backup/signing.js';
import { AGE_RECIPIENT } from '../config/kinds.js';
import { parseLsn, validSegmentBytes } from './wal-name.js';

const lsn = z.string().refine((v) => parseLsn(v) !== undefined, 'not an LSN');
const timeline = z.number().int().min(1).max(0xffff_ffff);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/);
const segmentName = z.string().regex(/^[0-9A-F]{24}$/);

export const BaseManifestSchema = z
  .object({
    manifestVersion: z.literal(1),
    kind: z.literal('basebackup'),
    key: z.string().min(1).max(1024),
    systemIdentifier: z.string().regex(/^\d{1,20}$/),
    timeline,
    /** WAL replay starts here (the checkpoint's redo point) and the backup is consistent from stopLsn on. */
    startLsn: lsn,
    stopLsn: lsn,
    startWalFile: segmentName,
    stopWalFile: segmentName,
    segmentBytes: z.number().int().refine(validSegmentBytes, 'not a WAL segment size'),
    /** The database server's clock when the backup began and when it had ended (read after it ended). */
    startDatabaseTime: isoDate,
    stopDatabaseTime: isoDate,
    startedAt: isoDate,
    finishedAt: isoDate,
    durationSeconds: z.number().nonnegative().max(1e9),
    serverVersion: line(200),
    serverVersionNum: z.number().int().min(0).max(10_000_000),
    pgBasebackupVersion: line(200),
    format: z.literal('tar'),
    compression: z
      .object({ algorithm: z.literal('gzip'), level: z.number().int().min(1).max(9), members: count })
      .strict(),
    /**
     * Encrypted with age after compression, to these recipients (their public keys; restoring needs
     * the identity of one of them). Absent: stored plain.
     */
    encryption: z
      .object({
        format: z.literal('age'),
        recipients: z.array(z.string().max(2000).regex(AGE_RECIPIENT)).min(1).max(100),
      })
      .strict()
      .optional(),
    /** The stored object (compressed, then encrypted if it is): what checks and retention work from. */
    size: count,
    sha256,
    /** The tar stream as pg_basebackup wrote it. */
    rawBytes: count,
    /** PostgreSQL's own backup_manifest (inside the tar, where pg_verifybackup reads it). */
    pgBackupManifest: z.object({ bytes: count, sha256 }).strict(),
    /** The scheduled tick this base backup ran for, if it was scheduled. */
    tick: isoDate.optional(),
    /** Why it was taken: the schedule, a command, or a break in the WAL chain that it restarts. */
    trigger: z.enum(['schedule', 'command', 'wal_gap', 'new_timeline', 'first']),
    tool: line(200),
    signature: SignatureSchema.optional(),
  })
  .strict();
export type BaseManifest = z.infer<typeof BaseManifestSchema>;

export const PitrDrillRecordSchema = z
  .object({
    recordVersion: z.literal(1),
    kind: z.literal('pitr-drill'),
    key: z.string().min(1).max(1024),
    systemIdentifier: z.string().regex(/^\d{1,20}$/),
    baseBackupKey: z.string().min(1).max(1024),
    result: z.enum(['ok', 'failed', 'inconclusive']),
    reason: line(2000).optional(),
    /** The recovery target the drill asked for, and as written to recovery_target_time (microseconds). */
    target: isoDate,
    recoveryTargetTime: line(40).optional(),
    /** The number of the heartbeat the recovered cluster held, and of the one it had to hold. */
    heartbeatNumber: z
      .string()
      .regex(/^\d{1,20}$/)
      .optional(),
    expectedHeartbeatNumber: z
      .string()
      .regex(/^\d{1,20}$/)
      .optional(),
    /** The newest heartbeat the recovered cluster held, and how far before the target it was. */
    newestHeartbeat: isoDate.optional(),
    precisionSeconds: z.number().min(-1e9).max(1e9).optional(),
    heartbeatIntervalSeconds: z.number().nonnegative().max(1e6),
    walFilesFetched: count,
    startedAt: isoDate,
    durationSeconds: z.number().nonnegative().max(1e9),
    signature: SignatureSchema.optional(),
  })
  .strict();
export type PitrDrillRecord = z.infer<typeof PitrDrillRecordSchema>;

export function parseBaseManifest(raw: Buffer | string, key: string): BaseManifest {
  const r = BaseManifestSchema.safeParse(parseJson(raw, `base backup manifest ${key}`));
  if (!r.success) throw new Error(`base backup manifest ${key} is malformed: ${issues(r.error)}`);
  return r.data;
}

export function parsePitrDrillRecord(raw: Buffer | string, key: string): PitrDrillRecord {
  const r = PitrDrillRecordSchema.safeParse(parseJson(raw, `PITR drill record ${key}`));
  if (!r.success) throw new Error(`PITR drill record ${key} is malformed: ${issues(r.error)}`);
  return r.data;
}
