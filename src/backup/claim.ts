/**
 * Slot claims: how pg-maintd processes that share a store, but not a database, agree that one of
 * them backs up a database for a scheduled slot. A daemon on the primary and one on a standby (or
 * on two standbys) have no lock in common (the lease table is read-only on a standby), so the store
 * decides: the first to write `.pgmaintd-claims/<db>/<slot>.json` with a no-overwrite put (link(2)
 * on a directory, If-None-Match: * on S3) takes the slot; the others skip it.
 *
 * Whoever can write to the store could plant claims to stop backups, so a claim is read as hostile
 * data and stops a run only if all of these hold; otherwise it is ignored (the run goes on, the
 * reason is returned for a warning and a metric):
 * - it parses (strict schema, small) and names this very database and slot;
 * - it comes from this cluster (the same system_identifier: a primary and its physical standbys);
 * - it was written after its slot came (by the store's clock and by its own date, within the clock
 *   tolerance): claims planted ahead of time for future slots stop nothing;
 * - its date is not ahead of the store's clock;
 * - with BACKUP_SIGNING_KEY_FILE, its signature checks.
 * What is left (an unsigned store, a writer racing each slot as it comes) is visible: the loser
 * logs the claimant, counts the skip, and the backup-too-old alerts still see the missing backup.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import type { ServerRole } from '../db/server-role.js';
import { databaseFolder, stamp } from './naming.js';
import { SignatureSchema, type Signer } from './signing.js';
import { ObjectExistsError, type Storage } from './storage/storage.js';
import { errorMessage } from '../core/errors.js';

export const CLAIMS_FOLDER = '.pgmaintd-claims';
/** A claim is a few hundred bytes; anything much larger was not written by pg-maintd. */
const MAX_CLAIM_BYTES = 4096;

/** Why a claim found in the store was not obeyed (a metric label). */
export const IGNORED_CLAIM_REASONS = [
  'malformed',
  'other_cluster',
  'premature',
  'future_dated',
  'unsigned',
] as const;
export type IgnoredClaimReason = (typeof IGNORED_CLAIM_REASONS)[number];

const ClaimSchema = z
  .object({
    claimVersion: z.literal(1),
    database: z.string().min(1).max(63),
    slot: z.iso.datetime(),
    claimedAt: z.iso.datetime(),
    holder: z.string().max(300),
    role: z.enum(['primary', 'standby']),
    systemIdentifier: z.string().regex(/^\d{1,20}$/),
    signature: SignatureSchema.optional(),
  })
  .strict();
export type SlotClaim = z.infer<typeof ClaimSchema>;

export interface ClaimRequest {
  database: string;
  slot: Date;
  role: ServerRole;
  systemIdentifier: string;
  /** Names this run in the claim ("host pid N run R"). */
  runId: string;
}

export interface ClaimOptions {
  storage: Storage;
  signer: Signer | undefined;
  clockToleranceMs: number;
}

export type ClaimOutcome =
  | { won: true }
  /** A claim that could be planted was found and not obeyed: the run goes on. */
  | { won: true; ignored: IgnoredClaimReason; detail: string }
  /** Another pg-maintd of this cluster took the slot. */
  | { won: false; claim: SlotClaim };

/**
 * The claims of the cluster's globals: a folder no database name can give (databaseFolder encodes
 * every `.`), and the name their claims carry.
 */
export const GLOBALS_CLAIM = '.globals';

export function claimKey(database: string, slot: Date): string {
  const folder = database === GLOBALS_CLAIM ? GLOBALS_CLAIM : databaseFolder(database);
  return `${CLAIMS_FOLDER}/${folder}/${stamp(slot)}.json`;
}

/** Takes the slot for this process, or says who has it. Storage errors throw. */
export async function claimSlot(o: ClaimOptions, req: ClaimRequest): Promise<ClaimOutcome> {
  const key = claimKey(req.database, req.slot);
  let claim: SlotClaim = {
    claimVersion: 1,
    database: req.database,
    slot: req.slot.toISOString(),
    claimedAt: new Date().toISOString(),
    holder: `${hostname()} pid ${process.pid} run ${req.runId}`.slice(0, 300),
    role: req.role,
    systemIdentifier: req.systemIdentifier,
  };
  if (o.signer) claim = o.signer.sign(claim);
  try {
    await o.storage.putSmall(key, JSON.stringify(claim, null, 2));
    return { won: true };
  } catch (err) {
    if (!(err instanceof ObjectExistsError)) throw err;
  }
  return judge(o, key, req);
}

/** Whether the claim already under `key` is one to obey. */
async function judge(o: ClaimOptions, key: string, req: ClaimRequest): Promise<ClaimOutcome> {
  const ignore = (ignored: IgnoredClaimReason, detail: string): ClaimOutcome => ({
    won: true,
    ignored,
    detail: `${key}: ${detail}`,
  });
  const stored = (await o.storage.list(key)).find((s) => s.key === key);
  if (!stored || stored.size > MAX_CLAIM_BYTES)
    return ignore('malformed', stored ? `larger than ${MAX_CLAIM_BYTES} bytes` : 'not a regular object');
  let claim: SlotClaim;
  try {
    const raw = await o.storage.getSmall(key);
    claim = ClaimSchema.parse(JSON.parse(raw?.toString('utf8') ?? ''));
  } catch (err) {
    return ignore('malformed', `not a claim pg-maintd writes (${errorMessage(err).slice(0, 200)})`);
  }
  if (claim.database !== req.database || Date.parse(claim.slot) !== req.slot.getTime())
    return ignore('malformed', `names ${claim.database} at ${claim.slot}, not this database and slot`);
  if (o.signer) {
    const check = o.signer.check(claim);
    if (check !== 'ok') return ignore('unsigned', `signature ${check.replace('_', ' ')}`);
  }
  if (claim.systemIdentifier !== req.systemIdentifier)
    return ignore(
      'other_cluster',
      `made by another cluster (system identifier ${claim.systemIdentifier}, this one ${req.systemIdentifier})`,
    );
  const earliest = req.slot.getTime() - o.clockToleranceMs;
  const written = Math.min(stored.lastModified.getTime(), Date.parse(claim.claimedAt));
  if (written < earliest)
    return ignore('premature', `written at ${new Date(written).toISOString()}, before its slot came`);
  const storeNow = (await o.storage.now())?.getTime() ?? Date.now();
  if (Date.parse(claim.claimedAt) > storeNow + o.clockToleranceMs)
    return ignore('future_dated', `dated ${claim.claimedAt}, ahead of the store's clock`);
  return { won: false, claim };
}
