/**
 * What bounds the per-relation collectors (table and index statistics): the largest N relations of
 * the database polled, by the planner's estimate of their size (src/db/relation-size.ts), skipping
 * any that someone holds in ACCESS EXCLUSIVE mode (a migration, VACUUM FULL, REINDEX, TRUNCATE).
 *
 * Ranking by pg_total_relation_size() instead opened and stat()ed every table, TOAST table and index
 * of the database on every poll (on 20,000 tables, seconds, past the statement timeout on a busy
 * server), where only the N chosen need their exact size, which the collectors still export. The
 * estimate lags between VACUUM/ANALYZE runs, and a table never vacuumed or analyzed counts as empty
 * until autovacuum or ANALYZE reaches it. Ties (empty tables) go by oid, so every collector that
 * asks picks the same tables: the table statistics and their I/O must join.
 *
 * The exclusive-lock check comes before the LIMIT (N tables are still reported while some are held)
 * and covers what the size functions open, each of which would wait for the lock: the table, its
 * TOAST table and every index of either. pg_locks is read once per query, not once per relation (a
 * correlated subquery rescans it per row, and a busy server has thousands of locks). A skipped
 * relation is back on the next poll.
 */
import { INDEX_PAGES, tablePages, tablePagesJoins } from '../../db/relation-size.js';

/** pg_locks, once: the relations of this database someone holds exclusively now. */
const LOCKED = `locked AS MATERIALIZED (
    SELECT l.relation FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.relation IS NOT NULL
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))`;

/** The schemas of pg_stat_user_tables and its siblings (other sessions' temporary tables included, as there). */
const USER_SCHEMA = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'`;

/**
 * An SQL array of the oids of the `limit` (an SQL expression) largest tables here, for
 * `relid = ANY (...)`: an array, not a join, so that the condition reaches pg_class inside the
 * pg_stat_* views (an index lookup per table chosen) instead of the views being computed for every
 * table and joined after.
 */
export function largestTables(limit: string): string {
  return `ARRAY(
  WITH ${LOCKED}, ${INDEX_PAGES},
  held_by_index AS MATERIALIZED (
    SELECT i.indrelid FROM pg_index i WHERE i.indexrelid IN (SELECT relation FROM locked))
  SELECT c.oid
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    ${tablePagesJoins('c')}
   WHERE c.relkind IN ('r', 'm', 'p') AND ${USER_SCHEMA}
     AND c.oid NOT IN (SELECT relation FROM locked) AND c.reltoastrelid NOT IN (SELECT relation FROM locked)
     AND c.oid NOT IN (SELECT indrelid FROM held_by_index) AND c.reltoastrelid NOT IN (SELECT indrelid FROM held_by_index)
   ORDER BY ${tablePages('c')} DESC, c.oid
   LIMIT ${limit})`;
}

/** The same for indexes: the `limit` largest by relpages, neither it nor its table held exclusively. */
export function largestIndexes(limit: string): string {
  return `ARRAY(
  WITH ${LOCKED}
  SELECT i.indexrelid
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE ic.relkind = 'i' AND c.relkind IN ('r', 'm') AND ${USER_SCHEMA}
     AND i.indexrelid NOT IN (SELECT relation FROM locked) AND i.indrelid NOT IN (SELECT relation FROM locked)
   ORDER BY ic.relpages DESC, i.indexrelid
   LIMIT ${limit})`;
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
