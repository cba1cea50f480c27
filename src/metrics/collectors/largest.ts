/**
 * What bounds the per-relation collectors (table and index statistics): the largest N relations of
 * the database polled, skipping any that someone holds in ACCESS EXCLUSIVE mode (a migration, VACUUM
 * FULL, REINDEX): the size functions that order them wait for a lock, and a poll must not queue
 * behind the application. A skipped relation is back on the next poll.
 */

/** A WHERE condition: none of the relations `oids` (SQL expressions) is held exclusively here. */
export function notHeldExclusively(...oids: string[]): string {
  return `NOT EXISTS (SELECT 1 FROM pg_locks l
                       WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
                         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND l.relation IN (${oids.join(', ')}))`;
}

/** Rows to samples: the rows of each database polled, kept apart so one database's poll replaces only its own. */
export class RowsByDatabase<R> {
  readonly #rows = new Map<string, R[]>();

  set(database: string, rows: R[]): void {
    this.#rows.set(database, rows);
  }

  clear(database?: string): void {
    if (database === undefined) this.#rows.clear();
    else this.#rows.delete(database);
  }

  all(): R[] {
    return [...this.#rows.values()].flat();
  }
}
