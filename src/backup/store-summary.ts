/**
 * What the store held for each database when it was last listed, kept in memory for the status
 * page. Nothing here lists the store: the catalog tells it of every listing the daemon makes anyway
 * (at start, after each backup, drill, retention and skipped tick), so a page view costs nothing.
 */
import type { BackupFacts, DrillFacts } from '../status/summary.js';
import { trusted, type Catalog, type CatalogListing, type ListingListener } from './catalog.js';
import { verifyResult, type VerifyRecord } from './manifest.js';

/** The facts of one listing: the newest trusted backup, whether a drill passed for it, the newest drill. */
export function backupFactsOf(database: string, listing: CatalogListing, at: Date): BackupFacts {
  const good = trusted(listing);
  const newest = good[0];
  const drills = good.map((g) => g.verify).filter((v) => v !== undefined);
  const last = drills.sort((a, b) => Date.parse(b.verifiedAt) - Date.parse(a.verifiedAt))[0];
  return {
    database,
    listedAt: at.toISOString(),
    listError: null,
    stored: good.length,
    newest: newest
      ? {
          key: newest.key,
          startedAt: newest.manifest.startedAt,
          finishedAt: newest.manifest.finishedAt,
          tick: newest.manifest.tick ?? null,
          sizeBytes: newest.size,
          durationSeconds: newest.manifest.durationSeconds,
          drill: newest.verify ? drillFacts(newest.verify) : null,
        }
      : null,
    lastDrill: last ? drillFacts(last) : null,
  };
}

function drillFacts(r: VerifyRecord): DrillFacts {
  const result = verifyResult(r);
  return {
    key: r.key,
    at: r.verifiedAt,
    result,
    tablesCompared: r.tablesCompared,
    mismatches: r.mismatches.length,
    reason:
      result === 'ok' ? null : (r.reason ?? r.error ?? (r.mismatches.length ? 'row counts differ' : null)),
  };
}

/** Facts for a database not listed yet. */
export function unknownFacts(database: string): BackupFacts {
  return { database, listedAt: null, listError: null, stored: 0, newest: null, lastDrill: null };
}

export class StoreSummary {
  readonly #facts = new Map<string, BackupFacts>();

  constructor(readonly databases: readonly string[]) {}

  /** Follows every listing `catalog` makes from now on. */
  follow(catalog: Catalog): this {
    catalog.onListed(this.#record);
    return this;
  }

  /** The facts per configured database, in BACKUP_DATABASES order ("unknown yet" until listed). */
  facts(): BackupFacts[] {
    return this.databases.map((d) => this.#facts.get(d) ?? unknownFacts(d));
  }

  readonly #record: ListingListener = (database, result) => {
    if (!this.databases.includes(database)) return;
    if ('listing' in result) {
      this.#facts.set(database, backupFactsOf(database, result.listing, result.at));
      return;
    }
    // a failed listing keeps what the last good one showed, and says why it is not newer
    const before = this.#facts.get(database) ?? unknownFacts(database);
    this.#facts.set(database, { ...before, listError: result.error.message.split('\n')[0]!.slice(0, 300) });
  };
}
