/**
 * What is stored for a database, sorted into good backups (data object plus a manifest that matches
 * it) and leftovers. Listing, retention, restore and the metrics all read it from here, so an object
 * without a manifest is never good and never the "latest".
 *
 * Nothing read from the store is trusted as it is: a manifest is parsed strictly, must name its own
 * object and size, must carry a valid signature when BACKUP_SIGNING_KEY_FILE is set, and a backup
 * dated ahead of the store's clock, of the time the store wrote it, or of the database server's clock
 * is flagged "future-dated": listed, never deleted, but never the latest nor counted toward the
 * retention minimum.
 */
import {
  MAX_RECORD_BYTES,
  encryptionOf,
  parseManifest,
  parseVerifyRecord,
  v2,
  type Manifest,
  type VerifyRecord,
} from './manifest.js';
import {
  MANIFEST_SUFFIX,
  databaseFolders,
  isVerifyKey,
  parseDataKey,
  verifyKeysOf,
  verifyStampOf,
} from './naming.js';
import { describeSignatureCheck, type SignatureCheck, type Signer } from './signing.js';
import { isTemporaryKey } from './storage/fs.js';
import type { Storage, StoredObject } from './storage/storage.js';
import { errorMessage } from '../core/errors.js';

/** Drill records of one backup read per listing, newest first, until one can be trusted. */
const MAX_RECORDS_READ = 5;
const NO_MANIFEST = 'no manifest: the backup did not complete';

/** Why an object that looks like a backup is not trusted (a metric label). */
export const SUSPECT_REASONS = [
  'future_dated',
  'past_dated',
  'signature_missing',
  'signature_invalid',
  'unknown_key',
  'malformed',
] as const;
export type SuspectReason = (typeof SUSPECT_REASONS)[number];

export interface GoodBackup {
  key: string;
  database: string;
  manifest: Manifest;
  /** When the backup started (from the manifest). */
  at: Date;
  size: number;
  verify: VerifyRecord | undefined;
  /** Every drill record stored for it (trusted or not): retention deletes them with the backup. */
  verifyKeys?: string[];
  /**
   * Set when the backup is intact but its dates cannot be trusted (ahead of a clock pg-maintd does not
   * control, or a writer's clock behind the database's): never the latest, never counted, never deleted.
   */
  suspect?: { reason: 'future_dated' | 'past_dated'; detail: string };
}

export interface Leftover {
  key: string;
  why: string;
  lastModified: Date;
  /**
   * Retention may delete it after the grace period: an unfinished write, data that never got a
   * manifest, or a manifest whose data is gone. A manifest this version cannot read, one that
   * disagrees with its object, or one whose signature fails is kept for a person to look at: it may
   * be a good backup written by another version or before signing was turned on.
   */
  deletable: boolean;
  reason?: SuspectReason;
}

export interface CatalogListing {
  good: GoodBackup[]; // newest first, suspects included (flagged)
  incomplete: Leftover[];
}

export interface CatalogOptions {
  signer?: Signer | undefined;
  /** How far a backup's dates may run ahead of a reference clock before they count as the future. */
  clockToleranceMs: number;
}

type Entry =
  | { kind: 'good'; backup: GoodBackup }
  | { kind: 'leftover'; why: string; deletable: boolean; reason?: SuspectReason }
  | { kind: 'foreign' };
type Leftovers = Extract<Entry, { kind: 'leftover' }>;
type ReadManifest = { manifest: Manifest; signature: SignatureCheck } | Leftovers;

/** Told of each listing of a database (or why it failed): the status page keeps the last one. */
export type ListingListener = (
  database: string,
  result: { listing: CatalogListing; at: Date } | { error: Error; at: Date },
) => void;

/** The good backups to rely on: not future-dated. */
export function trusted(listing: CatalogListing): GoodBackup[] {
  return listing.good.filter((g) => !g.suspect);
}

export class Catalog {
  // keyed by key, size and time written: a manifest replaced in the store is read again
  readonly #manifests = new Map<string, ReadManifest>();
  readonly #listeners: ListingListener[] = [];

  constructor(
    readonly storage: Storage,
    readonly options: CatalogOptions = { clockToleranceMs: 5 * 60_000 },
  ) {}

  get signer(): Signer | undefined {
    return this.options.signer;
  }

  /** Calls `listener` after every listing from now on: whoever lists the store anyway keeps it current. */
  onListed(listener: ListingListener): void {
    this.#listeners.push(listener);
  }

  async list(database: string): Promise<CatalogListing> {
    let listing: CatalogListing;
    try {
      listing = await this.#list(database);
    } catch (err) {
      this.#tell(database, { error: err instanceof Error ? err : new Error(String(err)), at: new Date() });
      throw err;
    }
    this.#tell(database, { listing, at: new Date() });
    return listing;
  }

  #tell(database: string, result: Parameters<ListingListener>[1]): void {
    for (const l of this.#listeners) l(database, result);
  }

  async #list(database: string): Promise<CatalogListing> {
    const byKey = new Map<string, StoredObject>();
    for (const folder of databaseFolders(database))
      for (const o of await this.storage.list(`${folder}/`)) byKey.set(o.key, o);
    const storeNow = await this.storage.now();
    const good: GoodBackup[] = [];
    const incomplete: Leftover[] = [];
    for (const o of byKey.values()) {
      // a dump is one level down; anything deeper (point-in-time recovery's pitr/<cluster>/...) is not a dump folder's
      if (o.key.indexOf('/') !== o.key.lastIndexOf('/')) continue;
      if (isTemporaryKey(o.key)) {
        incomplete.push({
          key: o.key,
          why: 'unfinished write',
          lastModified: o.lastModified,
          deletable: true,
        });
        continue;
      }
      if (isVerifyKey(o.key)) continue;
      if (o.key.endsWith(MANIFEST_SUFFIX)) {
        const dataKey = o.key.slice(0, -MANIFEST_SUFFIX.length);
        if (!byKey.has(dataKey) && parseDataKey(dataKey)?.databases.includes(database))
          incomplete.push({
            key: o.key,
            why: 'manifest without data',
            lastModified: o.lastModified,
            deletable: true,
          });
        continue;
      }
      const parsed = parseDataKey(o.key);
      if (!parsed?.databases.includes(database)) continue; // not ours: never touched
      const entry = await this.#entry(o, byKey, database, storeNow);
      if (entry.kind === 'good') good.push(entry.backup);
      else if (entry.kind === 'leftover')
        incomplete.push({
          key: o.key,
          why: entry.why,
          lastModified: o.lastModified,
          deletable: entry.deletable,
          ...(entry.reason ? { reason: entry.reason } : {}),
        });
    }
    good.sort((a, b) => b.at.getTime() - a.at.getTime() || (a.key < b.key ? 1 : -1));
    return { good, incomplete };
  }

  /** The newest good backup that is not future-dated. */
  async latest(database: string): Promise<GoodBackup | undefined> {
    return trusted(await this.list(database))[0];
  }

  /**
   * A good backup by key, or a reason it is not one. `acceptUnsigned`: one whose signature is missing
   * or wrong is returned all the same, with `unsigned` saying what is wrong (an operator's explicit choice).
   */
  async find(
    key: string,
    opts: { acceptUnsigned?: boolean } = {},
  ): Promise<(GoodBackup & { unsigned?: string }) | string> {
    const parsed = parseDataKey(key);
    if (!parsed)
      return `"${key}" is not a backup key (expected <database>/<database>_<YYYYMMDD_HHMMSS>-<run>.sql.gz[.age], as \`pg-maintd backups list\` prints it)`;
    const objects = await this.storage.list(key);
    const byKey = new Map(objects.map((o) => [o.key, o]));
    const data = byKey.get(key);
    if (!data) return `no backup stored under "${key}"`;
    const entry = await this.#entry(data, byKey, undefined, await this.storage.now(), opts.acceptUnsigned);
    if (entry.kind === 'good') return entry.backup;
    return entry.kind === 'leftover' ? entry.why : 'its manifest names another database';
  }

  async #entry(
    data: StoredObject,
    byKey: Map<string, StoredObject>,
    database: string | undefined,
    storeNow: Date | undefined,
    acceptUnsigned = false,
  ): Promise<Entry> {
    const manifestKey = data.key + MANIFEST_SUFFIX;
    const mo = byKey.get(manifestKey);
    if (!mo) return { kind: 'leftover', why: NO_MANIFEST, deletable: true };
    const read = await this.#manifest(mo);
    if ('kind' in read) return read;
    const { manifest, signature } = read;
    if (signature !== 'ok' && !acceptUnsigned)
      return {
        kind: 'leftover',
        why: describeSignatureCheck(signature),
        deletable: false,
        reason:
          signature === 'missing'
            ? 'signature_missing'
            : signature === 'unknown_key'
              ? 'unknown_key'
              : 'signature_invalid',
      };
    const candidates = parseDataKey(data.key)?.databases ?? [];
    if (manifest.database !== (database ?? manifest.database) || !candidates.includes(manifest.database)) {
      // an older raw folder name can be another database's encoded one: that database lists it
      if (database !== undefined && databaseFolders(manifest.database).includes(data.key.split('/')[0]!))
        return { kind: 'foreign' };
      return {
        kind: 'leftover',
        why: `manifest names database "${manifest.database}", which does not match its key`,
        deletable: false,
        reason: 'malformed',
      };
    }
    if (manifest.key !== data.key)
      return {
        kind: 'leftover',
        why: `manifest names another object (${manifest.key})`,
        deletable: false,
        reason: 'malformed',
      };
    // the key's `.age` and the manifest must agree: a restore takes its path from them
    if (parseDataKey(data.key)?.encrypted !== (encryptionOf(manifest) !== undefined))
      return {
        kind: 'leftover',
        why: encryptionOf(manifest)
          ? 'manifest says encrypted, but the key does not end in .age'
          : 'key ends in .age, but the manifest records no encryption',
        deletable: false,
        reason: 'malformed',
      };
    if (manifest.size !== data.size)
      return {
        kind: 'leftover',
        why: `size ${data.size} differs from the manifest's ${manifest.size}`,
        deletable: false,
        reason: 'malformed',
      };
    const verifyKeys = verifyKeysOf(data.key, byKey.keys());
    const backup: GoodBackup & { unsigned?: string } = {
      key: data.key,
      database: manifest.database,
      manifest,
      at: new Date(manifest.startedAt),
      size: data.size,
      verify: await this.#verifyRecord(data.key, verifyKeys, byKey, manifest, storeNow),
      verifyKeys,
      ...(signature === 'ok' ? {} : { unsigned: describeSignatureCheck(signature) }),
    };
    const misdated = this.#misdated(manifest, mo, storeNow);
    if (misdated) backup.suspect = misdated;
    return { kind: 'good', backup };
  }

  /** The manifest and its signature's check, or why it is not usable (cached: manifests do not change). */
  async #manifest(mo: StoredObject): Promise<ReadManifest> {
    const cacheKey = `${mo.key}\0${mo.size}\0${mo.lastModified.getTime()}`;
    const cached = this.#manifests.get(cacheKey);
    if (cached) return cached;
    let result: ReadManifest;
    if (mo.size > MAX_RECORD_BYTES) {
      result = {
        kind: 'leftover',
        why: `manifest larger than ${MAX_RECORD_BYTES} bytes`,
        deletable: false,
        reason: 'malformed',
      };
    } else {
      const raw = await this.storage.getSmall(mo.key);
      if (!raw) return { kind: 'leftover', why: NO_MANIFEST, deletable: true };
      try {
        const manifest = parseManifest(raw, mo.key);
        result = { manifest, signature: this.options.signer?.check(manifest) ?? 'ok' };
      } catch (err) {
        result = { kind: 'leftover', why: errorMessage(err), deletable: false, reason: 'malformed' };
      }
    }
    if (this.#manifests.size > 10_000) this.#manifests.clear();
    this.#manifests.set(cacheKey, result);
    return result;
  }

  /**
   * Why the manifest's dates cannot be trusted, if so: ahead of the store's clock, of the time the
   * store recorded writing the manifest, or of the database server's clock at the dump (a fast
   * writer, or a forgery); a tick after the run's own start; or a start behind the database's clock
   * (a slow writer, whose backup would pass for an old one). Earlier dates alone are not suspect: a
   * copy of an old backup written today is still that old backup.
   */
  #misdated(m: Manifest, manifestObject: StoredObject, storeNow: Date | undefined): GoodBackup['suspect'] {
    const tol = this.options.clockToleranceMs;
    const started = Date.parse(m.startedAt);
    const tick = m.tick ? Date.parse(m.tick) : undefined;
    const claimed = Math.max(started, Date.parse(m.finishedAt), tick ?? 0);
    const s = (ms: number) => `${Math.round(ms / 1000)} s`;
    const future = (detail: string) => ({ reason: 'future_dated' as const, detail });
    if (storeNow && claimed > storeNow.getTime() + tol)
      return future(
        `dated ${new Date(claimed).toISOString()}, ${s(claimed - storeNow.getTime())} ahead of the store's clock`,
      );
    const written = manifestObject.lastModified.getTime();
    if (written > 0 && claimed > written + tol)
      return future(
        `dated ${new Date(claimed).toISOString()}, ${s(claimed - written)} after the store recorded writing it`,
      );
    if (tick !== undefined && tick > started + tol)
      return future(
        `its tick ${m.tick} lies ${s(tick - started)} after its own start: a run never starts before its slot`,
      );
    const dbTime = v2(m)?.databaseTime;
    if (dbTime === undefined) return undefined;
    const skew = started - Date.parse(dbTime);
    if (skew > tol)
      return future(
        `started ${m.startedAt} by its writer's clock, ${s(skew)} ahead of the database server's clock`,
      );
    if (skew < -tol)
      return {
        reason: 'past_dated',
        detail: `started ${m.startedAt} by its writer's clock, ${s(-skew)} behind the database server's clock`,
      };
    return undefined;
  }

  /**
   * The drill record of a backup, when it can be trusted: it parses, names the backup, checks (with a
   * signing key), and its date is neither ahead of the store's clock or of when the store wrote it
   * nor before the backup itself (a drill under a fast clock would otherwise silence the alerts).
   */
  async #verifyRecord(
    key: string,
    records: string[],
    byKey: Map<string, StoredObject>,
    backup: Manifest,
    storeNow: Date | undefined,
  ): Promise<VerifyRecord | undefined> {
    // newest first by name; one that cannot be trusted gives way to the one before it (a few at most:
    // each costs a read on every listing). Names carry the second only: records of the same second
    // are all read and the latest drill in them counts.
    let best: { record: VerifyRecord; stamp: string | undefined } | undefined;
    for (const recordKey of records.slice(0, MAX_RECORDS_READ)) {
      const stamp = verifyStampOf(key, recordKey);
      if (best && stamp !== best.stamp) break;
      const o = byKey.get(recordKey);
      const record = o ? await this.#trustedRecord(key, o, backup, storeNow) : undefined;
      if (record && (!best || Date.parse(record.verifiedAt) > Date.parse(best.record.verifiedAt)))
        best = { record, stamp };
    }
    return best?.record;
  }

  async #trustedRecord(
    key: string,
    o: StoredObject,
    backup: Manifest,
    storeNow: Date | undefined,
  ): Promise<VerifyRecord | undefined> {
    if (o.size > MAX_RECORD_BYTES) return undefined;
    try {
      const raw = await this.storage.getSmall(o.key);
      if (!raw) return undefined;
      const record = parseVerifyRecord(raw, o.key);
      if (record.key !== key) return undefined;
      if (this.options.signer && this.options.signer.check(record) !== 'ok') return undefined;
      const at = Date.parse(record.verifiedAt);
      const tol = this.options.clockToleranceMs;
      if (storeNow && at > storeNow.getTime() + tol) return undefined;
      if (o.lastModified.getTime() > 0 && at > o.lastModified.getTime() + tol) return undefined;
      if (at < Date.parse(backup.finishedAt) - tol) return undefined;
      return record;
    } catch {
      return undefined; // an unreadable drill record is no record, not a broken backup
    }
  }
}
