/**
 * The manifest: written after the data object is complete; a backup without one is never good.
 * Everything read from the store is hostile until parsed here: strict schemas (no unknown field),
 * bounded sizes and lengths, names in the only shape pg-maintd writes them, dates that parse.
 * Version 1 is what earlier releases wrote; version 2 adds the cluster, the database's clock, pg_dump's
 * warnings and the signature.
 */
import { z } from 'zod';
import { databaseNameProblem } from './naming.js';
import { SignatureSchema } from './signing.js';
import { parseTableName } from './table-name.js';
import { errorMessage } from '../core/errors.js';

/** A manifest or drill record larger than this is not read (a table per kilobyte is far beyond it). */
export const MAX_RECORD_BYTES = 64 * 1024 ** 2;

const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$/;
/** An ISO 8601 UTC time as pg-maintd writes them. */
export const isoDate = z
  .string()
  .regex(ISO_RE)
  .refine((v) => !Number.isNaN(Date.parse(v)));
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
/** One line of text: no control character (a newline could forge a line of output). */
export const line = (max: number) =>
  z
    .string()
    .max(max)
    .refine((v) => !CONTROL.test(v));
export const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const databaseName = z.string().refine((v) => databaseNameProblem(v) === undefined);

const RowCountSchema = z.object({ rows: count, exact: z.boolean() }).strict();
const rowCounts = z.record(
  z.string().refine((k) => parseTableName(k) !== undefined, 'not a schema-qualified table name'),
  RowCountSchema,
);

const common = {
  key: z.string().min(1).max(1024),
  database: databaseName,
  format: z.enum(['plain', 'custom']),
  compression: z
    .object({ algorithm: z.literal('gzip'), level: z.number().int().min(1).max(9), members: count })
    .strict(),
  size: count,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  pgDumpVersion: line(200),
  serverVersion: line(200),
  serverVersionNum: z.number().int().min(0).max(10_000_000),
  startedAt: isoDate,
  finishedAt: isoDate,
  durationSeconds: z.number().nonnegative().max(1e9),
  /** The scheduled tick this backup ran for, if it was scheduled: replicas skip a tick already done. */
  tick: isoDate.optional(),
  rowCounts,
  tool: line(200),
};

/**
 * Set when the stored object is age-encrypted (after compression): to whom, so that a missing or wrong
 * identity is named in the error. Absent: the object is plain. size and sha256 are of the stored
 * (encrypted) bytes, so checks and retention need no identity.
 */
export const EncryptionSchema = z
  .object({
    format: z.literal('age'),
    recipients: z
      .array(
        z
          .string()
          .max(2000)
          .regex(/^age1[0-9a-z]+$/),
      )
      .min(1)
      .max(100),
  })
  .strict();
export type Encryption = z.infer<typeof EncryptionSchema>;

const ManifestV1Schema = z.object({ manifestVersion: z.literal(1), ...common }).strict();

const ManifestV2Schema = z
  .object({
    manifestVersion: z.literal(2),
    ...common,
    /** pg_control_system().system_identifier of the cluster dumped: another cluster's backups are told apart. */
    systemIdentifier: z.string().regex(/^\d{1,20}$/),
    /** The database server's clock when the dump's snapshot was taken, against which startedAt is checked. */
    databaseTime: isoDate,
    /** What pg_dump warned about on a successful run. */
    warnings: z.array(line(2000)).max(100),
    /**
     * keep: the dump holds owners and GRANTs (it names roles the globals hold); omit: taken with
     * --no-owner --no-privileges. Absent in manifests of earlier releases, which all omitted them.
     */
    ownership: z.enum(['keep', 'omit']).optional(),
    encryption: EncryptionSchema.optional(),
    signature: SignatureSchema.optional(),
  })
  .strict();

export type ManifestV2 = z.infer<typeof ManifestV2Schema>;
/** A manifest of either version, with the fields version 1 lacks left out. */
export type Manifest = z.infer<typeof ManifestV1Schema> | ManifestV2;

const VerifyResultSchema = z.enum(['ok', 'failed', 'inconclusive']);
export type VerifyResult = z.infer<typeof VerifyResultSchema>;

const VerifyRecordSchema = z
  .object({
    key: z.string().min(1).max(1024),
    ok: z.boolean(),
    /** Absent in records of earlier releases: ok or failed, from `ok`. */
    result: VerifyResultSchema.optional(),
    /** Why the drill was not ok (inconclusive: nothing could be compared). */
    reason: line(2000).optional(),
    verifiedAt: isoDate,
    durationSeconds: z.number().nonnegative().max(1e9),
    tablesCompared: count,
    mismatches: z
      .array(z.object({ table: line(300), expected: count, actual: count.nullable() }).strict())
      .max(100_000),
    error: z.string().max(10_000).optional(),
    signature: SignatureSchema.optional(),
  })
  .strict();

export type VerifyRecord = z.infer<typeof VerifyRecordSchema>;

export function verifyResult(r: VerifyRecord): VerifyResult {
  return r.result ?? (r.ok ? 'ok' : 'failed');
}

/** A record's JSON, refused past MAX_RECORD_BYTES (shared by every record read from the store). */
export function parseJson(raw: Buffer | string, what: string): unknown {
  if (raw.length > MAX_RECORD_BYTES) throw new Error(`${what} is larger than ${MAX_RECORD_BYTES} bytes`);
  try {
    return JSON.parse(raw.toString());
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${errorMessage(err)}`);
  }
}

/** The first few problems a schema found, for one line of a message. */
export function issues(e: z.ZodError): string {
  return e.issues
    .slice(0, 5)
    .map((i) => `${i.path.map(String).join('.') || '(top)'}: ${i.message}`)
    .join('; ');
}

export function parseManifest(raw: Buffer | string, key: string): Manifest {
  const json = parseJson(raw, `manifest ${key}`);
  const version = (json as { manifestVersion?: unknown } | null)?.manifestVersion;
  const schema = version === 1 ? ManifestV1Schema : version === 2 ? ManifestV2Schema : undefined;
  if (!schema)
    throw new Error(
      `manifest ${key} has manifestVersion ${JSON.stringify(version)}, which this pg-maintd cannot read`,
    );
  const r = schema.safeParse(json);
  if (!r.success) throw new Error(`manifest ${key} is malformed: ${issues(r.error)}`);
  return r.data;
}

export function parseVerifyRecord(raw: Buffer | string, key: string): VerifyRecord {
  const r = VerifyRecordSchema.safeParse(parseJson(raw, `drill record ${key}`));
  if (!r.success) throw new Error(`drill record ${key} is malformed: ${issues(r.error)}`);
  return r.data;
}

/** To whom the backup's object is encrypted, or undefined for a plain one. */
export function encryptionOf(m: Manifest): Encryption | undefined {
  return m.manifestVersion === 2 ? m.encryption : undefined;
}

export type Ownership = 'keep' | 'omit';

/** Whether the dump holds owners and GRANTs; releases before BACKUP_OWNERSHIP always omitted them. */
export function ownershipOf(m: Manifest): Ownership {
  return (m.manifestVersion === 2 ? m.ownership : undefined) ?? 'omit';
}

/** The version 2 fields of a manifest, where it has them. */
export function v2(m: Manifest): ManifestV2 | undefined {
  return m.manifestVersion === 2 ? m : undefined;
}
