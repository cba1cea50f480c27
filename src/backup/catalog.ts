/**
 * What is stored for a database, sorted into good backups (data object plus a manifest that matches
 * it) and incomplete leftovers. Listing, retention, restore and the metrics all read it from here,
 * so an object without a manifest is never good and never the "latest".
 */
import { parseManifest, VerifyRecordSchema, type Manifest, type VerifyRecord } from './manifest.js';
import { MANIFEST_SUFFIX, VERIFY_SUFFIX, databasePrefix, parseDataKey } from './naming.js';
import { PARTIAL_MARK } from './storage/fs.js';
import type { Storage, StoredObject } from './storage/storage.js';

const NO_MANIFEST = 'no manifest: the backup did not complete';

export interface GoodBackup {
  key: string;
  database: string;
  manifest: Manifest;
  /** When the backup started (from the manifest). */
  at: Date;
  size: number;
  verify: VerifyRecord | undefined;
}

export interface Leftover {
  key: string;
  why: string;
  lastModified: Date;
  /**
   * Retention may delete it after the grace period: an unfinished write, data that never got a
   * manifest, or a manifest whose data is gone. A manifest this version cannot read, or one that
   * disagrees with its object, is kept for a person to look at: it may be a good backup written by
   * another version of pg-maintd.
   */
  deletable: boolean;
}

export interface CatalogListing {
  good: GoodBackup[]; // newest first
  incomplete: Leftover[];
}

export class Catalog {
  readonly #manifests = new Map<string, Manifest>(); // manifests never change: cache them

  constructor(readonly storage: Storage) {}

  async list(database: string): Promise<CatalogListing> {
    const objects = await this.storage.list(databasePrefix(database));
    const byKey = new Map(objects.map((o) => [o.key, o]));
    const good: GoodBackup[] = [];
    const incomplete: Leftover[] = [];
    for (const o of objects) {
      if (o.key.includes(PARTIAL_MARK)) {
        incomplete.push({
          key: o.key,
          why: 'unfinished write',
          lastModified: o.lastModified,
          deletable: true,
        });
        continue;
      }
      if (o.key.endsWith(MANIFEST_SUFFIX)) {
        if (!byKey.has(o.key.slice(0, -MANIFEST_SUFFIX.length))) {
          incomplete.push({
            key: o.key,
            why: 'manifest without data',
            lastModified: o.lastModified,
            deletable: true,
          });
        }
        continue;
      }
      const parsed = parseDataKey(o.key);
      if (!parsed || parsed.database !== database) continue; // not ours: never touched
      const entry = await this.#entry(o, byKey);
      if (typeof entry === 'string') {
        incomplete.push({
          key: o.key,
          why: entry,
          lastModified: o.lastModified,
          deletable: entry === NO_MANIFEST,
        });
      } else good.push(entry);
    }
    good.sort((a, b) => b.at.getTime() - a.at.getTime());
    return { good, incomplete };
  }

  async latest(database: string): Promise<GoodBackup | undefined> {
    return (await this.list(database)).good[0];
  }

  /** A good backup by key, or a reason it is not one. */
  async find(key: string): Promise<GoodBackup | string> {
    const parsed = parseDataKey(key);
    if (!parsed)
      return `"${key}" is not a backup key (expected <database>/<database>_<YYYYMMDD_HHMMSS>.sql.gz)`;
    const objects = await this.storage.list(key);
    const byKey = new Map(objects.map((o) => [o.key, o]));
    const data = byKey.get(key);
    if (!data) return `no backup stored under "${key}"`;
    return this.#entry(data, byKey);
  }

  async #entry(data: StoredObject, byKey: Map<string, StoredObject>): Promise<GoodBackup | string> {
    const manifestKey = data.key + MANIFEST_SUFFIX;
    if (!byKey.has(manifestKey)) return NO_MANIFEST;
    let manifest = this.#manifests.get(manifestKey);
    if (!manifest) {
      const raw = await this.storage.getSmall(manifestKey);
      if (!raw) return NO_MANIFEST;
      try {
        manifest = parseManifest(raw, manifestKey);
      } catch (err) {
        return (err as Error).message;
      }
      this.#manifests.set(manifestKey, manifest);
    }
    if (manifest.key !== data.key) return `manifest names another object (${manifest.key})`;
    if (manifest.size !== data.size) return `size ${data.size} differs from the manifest's ${manifest.size}`;
    let verify: VerifyRecord | undefined;
    if (byKey.has(data.key + VERIFY_SUFFIX)) {
      const raw = await this.storage.getSmall(data.key + VERIFY_SUFFIX);
      try {
        const r = raw ? VerifyRecordSchema.safeParse(JSON.parse(raw.toString())) : undefined;
        verify = r?.success ? r.data : undefined;
      } catch {
        verify = undefined; // an unreadable drill record is no record, not a broken backup
      }
    }
    return {
      key: data.key,
      database: manifest.database,
      manifest,
      at: new Date(manifest.startedAt),
      size: data.size,
      verify,
    };
  }
}
