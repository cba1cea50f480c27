/** The manifest: written after the data object is complete; a backup without one is never good. */
import { z } from 'zod';

export const RowCountSchema = z.object({ rows: z.number().int().nonnegative(), exact: z.boolean() });

export const ManifestSchema = z.object({
  manifestVersion: z.literal(1),
  key: z.string(),
  database: z.string(),
  format: z.enum(['plain', 'custom']),
  compression: z.object({ algorithm: z.literal('gzip'), level: z.number().int(), members: z.number().int() }),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  pgDumpVersion: z.string(),
  serverVersion: z.string(),
  serverVersionNum: z.number().int(),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationSeconds: z.number().nonnegative(),
  /** The scheduled tick this backup ran for, if it was scheduled: replicas skip a tick already done. */
  tick: z.string().optional(),
  rowCounts: z.record(z.string(), RowCountSchema),
  tool: z.string(),
});

export type Manifest = z.infer<typeof ManifestSchema>;

export const VerifyRecordSchema = z.object({
  key: z.string(),
  ok: z.boolean(),
  verifiedAt: z.string(),
  durationSeconds: z.number(),
  tablesCompared: z.number().int(),
  mismatches: z.array(z.object({ table: z.string(), expected: z.number(), actual: z.number().nullable() })),
  error: z.string().optional(),
});

export type VerifyRecord = z.infer<typeof VerifyRecordSchema>;

export function parseManifest(raw: Buffer | string, key: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString());
  } catch (err) {
    throw new Error(`manifest ${key} is not valid JSON: ${(err as Error).message}`);
  }
  const r = ManifestSchema.safeParse(json);
  if (!r.success)
    throw new Error(
      `manifest ${key} is malformed: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  return r.data;
}
