/**
 * What is stored under globals/: good globals (data object plus a manifest that parses, names it,
 * matches its size and, with BACKUP_SIGNING_KEY_FILE, carries a valid signature) and leftovers, as
 * the dump catalog sorts a database's folder. Globals dated ahead of the store's clock are flagged,
 * never the newest and never deleted.
 */
import type { Catalog, Leftover } from './catalog.js';
import {
  GLOBALS_FOLDER,
  isGlobalsKey,
  parseGlobalsManifest,
  type GlobalsManifest,
} from './globals-manifest.js';
import { MAX_RECORD_BYTES } from './manifest.js';
import { MANIFEST_SUFFIX } from './naming.js';
import { describeSignatureCheck } from './signing.js';
import { isTemporaryKey } from './storage/fs.js';
import type { StoredObject } from './storage/storage.js';
import { errorMessage } from '../core/errors.js';

export interface GoodGlobals {
  key: string;
  manifest: GlobalsManifest;
  at: Date;
  size: number;
  suspect?: string;
}

export interface GlobalsListing {
  good: GoodGlobals[]; // newest first
  incomplete: Leftover[];
}

export async function listGlobals(catalog: Catalog): Promise<GlobalsListing> {
  const objects = await catalog.storage.list(`${GLOBALS_FOLDER}/`);
  const byKey = new Map(objects.map((o) => [o.key, o]));
  const storeNow = await catalog.storage.now();
  const tol = catalog.options.clockToleranceMs;
  const good: GoodGlobals[] = [];
  const incomplete: Leftover[] = [];
  const leftover = (o: StoredObject, why: string, deletable: boolean) =>
    incomplete.push({ key: o.key, why, lastModified: o.lastModified, deletable });
  for (const o of objects) {
    if (isTemporaryKey(o.key)) {
      leftover(o, 'unfinished write', true);
      continue;
    }
    if (o.key.endsWith(MANIFEST_SUFFIX)) {
      const data = o.key.slice(0, -MANIFEST_SUFFIX.length);
      if (isGlobalsKey(data) && !byKey.has(data)) leftover(o, 'manifest without data', true);
      continue;
    }
    if (!isGlobalsKey(o.key)) continue; // not written by pg-maintd: never touched
    const mo = byKey.get(o.key + MANIFEST_SUFFIX);
    if (!mo) {
      leftover(o, 'no manifest: the globals backup did not complete', true);
      continue;
    }
    if (mo.size > MAX_RECORD_BYTES) {
      leftover(o, `manifest larger than ${MAX_RECORD_BYTES} bytes`, false);
      continue;
    }
    let manifest: GlobalsManifest;
    try {
      const raw = await catalog.storage.getSmall(mo.key);
      if (!raw) {
        leftover(o, 'no manifest: the globals backup did not complete', true);
        continue;
      }
      manifest = parseGlobalsManifest(raw, mo.key);
    } catch (err) {
      leftover(o, errorMessage(err), false);
      continue;
    }
    const signature = catalog.signer?.check(manifest) ?? 'ok';
    if (signature !== 'ok') {
      leftover(o, describeSignatureCheck(signature), false);
      continue;
    }
    if (manifest.key !== o.key) {
      leftover(o, `manifest names another object (${manifest.key})`, false);
      continue;
    }
    // the key's `.age` and the manifest must agree: a restore takes its path from them
    if (o.key.endsWith('.age') !== (manifest.encryption !== undefined)) {
      leftover(
        o,
        manifest.encryption
          ? 'manifest says encrypted, but the key does not end in .age'
          : 'key ends in .age, but the manifest records no encryption',
        false,
      );
      continue;
    }
    if (manifest.size !== o.size) {
      leftover(o, `size ${o.size} differs from the manifest's ${manifest.size}`, false);
      continue;
    }
    const g: GoodGlobals = { key: o.key, manifest, at: new Date(manifest.startedAt), size: o.size };
    const claimed = Math.max(Date.parse(manifest.startedAt), Date.parse(manifest.finishedAt));
    if (storeNow && claimed > storeNow.getTime() + tol)
      g.suspect = `dated ${manifest.finishedAt}, ahead of the store's clock`;
    else if (mo.lastModified.getTime() > 0 && claimed > mo.lastModified.getTime() + tol)
      g.suspect = `dated ${manifest.finishedAt}, after the store recorded writing it`;
    good.push(g);
  }
  good.sort((a, b) => b.at.getTime() - a.at.getTime() || (a.key < b.key ? 1 : -1));
  return { good, incomplete };
}
