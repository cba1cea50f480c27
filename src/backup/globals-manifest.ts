/**
 * The cluster's globals (roles, memberships, role settings, tablespaces: `pg_dumpall --globals-only`),
 * stored once per backup run beside the dumps:
 *   <prefix>globals/<YYYYMMDD_HHMMSS>-<run>.sql.gz[.age]   and   <data key>.manifest.json
 * (`.age`: encrypted to BACKUP_ENCRYPTION_RECIPIENTS after compression, as the dumps are).
 * A database's folder holds only `<folder>/<folder>_<stamp>...` keys, so nothing here is ever read as
 * a dump (and the dump catalog reads nothing deeper than one level). The manifest says `kind:
 * "globals"`: its strict schema and the dumps' refuse each other, so one never passes as the other.
 */
import { z } from 'zod';
import { EncryptionSchema, count, isoDate, issues, line, parseJson } from './manifest.js';
import { stamp } from './naming.js';
import { SignatureSchema } from './signing.js';

export const GLOBALS_FOLDER = 'globals';
const GLOBALS_KEY_RE = /^globals\/(?<ts>\d{8}_\d{6})-[0-9a-z]{1,16}\.sql\.gz(?:\.age)?$/;

export function globalsKey(at: Date, run: string, encrypted = false): string {
  return `${GLOBALS_FOLDER}/${stamp(at)}-${run}.sql.gz${encrypted ? '.age' : ''}`;
}

/** Whether a key is in the shape globalsKey writes. */
export function isGlobalsKey(key: string): boolean {
  const m = GLOBALS_KEY_RE.exec(key);
  if (!m?.groups) return false;
  const ts = m.groups.ts!;
  const at = new Date(
    `${ts.slice(0, 4)}-${ts.slice(4, 6)}-${ts.slice(6, 8)}T${ts.slice(9, 11)}:${ts.slice(11, 13)}:${ts.slice(13, 15)}Z`,
  );
  return !Number.isNaN(at.getTime()) && stamp(at) === ts;
}

const GlobalsManifestSchema = z
  .object({
    manifestVersion: z.literal(2),
    kind: z.literal('globals'),
    key: z.string().min(1).max(1024),
    /** The database pg_dumpall connected to. */
    database: line(200),
    compression: z
      .object({ algorithm: z.literal('gzip'), level: z.number().int().min(1).max(9), members: count })
      .strict(),
    /** Set when the object is age-encrypted; size and sha256 are of the stored (encrypted) bytes. */
    encryption: EncryptionSchema.optional(),
    size: count,
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    /** Whether the roles' password hashes are in it (BACKUP_GLOBALS_PASSWORDS and pg_authid readable). */
    passwords: z.boolean(),
    pgDumpallVersion: line(200),
    serverVersion: line(200),
    serverVersionNum: z.number().int().min(0).max(10_000_000),
    systemIdentifier: z.string().regex(/^\d{1,20}$/),
    databaseTime: isoDate,
    startedAt: isoDate,
    finishedAt: isoDate,
    durationSeconds: z.number().nonnegative().max(1e9),
    tick: isoDate.optional(),
    tool: line(200),
    signature: SignatureSchema.optional(),
  })
  .strict();

export type GlobalsManifest = z.infer<typeof GlobalsManifestSchema>;

export function parseGlobalsManifest(raw: Buffer | string, key: string): GlobalsManifest {
  const r = GlobalsManifestSchema.safeParse(parseJson(raw, `globals manifest ${key}`));
  if (!r.success) throw new Error(`globals manifest ${key} is malformed: ${issues(r.error)}`);
  return r.data;
}
