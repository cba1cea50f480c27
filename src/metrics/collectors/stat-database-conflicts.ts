/**
 * pg_stat_database_conflicts_confl_*{datid,datname}: queries canceled on a standby by recovery
 * conflicts, per database, as postgres_exporter exports them from its built-in metric map (the legacy
 * query path, so there is no reference collector name: this one is "stat_database_conflicts"). Like
 * the reference's `SELECT *`, every confl_* column the server has becomes a family: the five it maps
 * are counters, any other (confl_active_logicalslot from PostgreSQL 16) is untyped, "Unknown metric
 * from pg_stat_database_conflicts", as the reference sends it. Without the reference's `server`
 * label, like every pg-maintd collector. On a primary every value is 0.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = 'SELECT * FROM pg_stat_database_conflicts';
const PREFIX = 'pg_stat_database_conflicts_';
const UNKNOWN_HELP = 'Unknown metric from pg_stat_database_conflicts';

/** The columns of the reference's map, with its help texts. */
const MAPPED: Record<string, string> = {
  confl_tablespace: 'Number of queries in this database that have been canceled due to dropped tablespaces',
  confl_lock: 'Number of queries in this database that have been canceled due to lock timeouts',
  confl_snapshot: 'Number of queries in this database that have been canceled due to old snapshots',
  confl_bufferpin: 'Number of queries in this database that have been canceled due to pinned buffers',
  confl_deadlock: 'Number of queries in this database that have been canceled due to deadlocks',
};

type Label = 'datid' | 'datname';

export class StatDatabaseConflictsCollector implements Collector {
  readonly name = 'stat_database_conflicts';
  readonly #families = new Map<string, CachedFamily<Label>>();

  constructor(
    private readonly registry: Registry,
    readonly intervalMs?: number,
  ) {
    for (const [column, help] of Object.entries(MAPPED)) this.#family(column, help, 'counter');
    // PostgreSQL 16's column, known ahead so the family is there before the first poll
    this.#family('confl_active_logicalslot', UNKNOWN_HELP, 'untyped');
  }

  #family(column: string, help: string, type: 'counter' | 'untyped'): CachedFamily<Label> {
    let f = this.#families.get(column);
    if (!f) {
      f = new CachedFamily<Label>(this.registry, {
        name: `${PREFIX}${column}`,
        help,
        type,
        labelNames: ['datid', 'datname'],
      });
      this.#families.set(column, f);
    }
    return f;
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const r = await client.query<Record<string, string | number | null>>(SQL);
    // a column name becomes part of a metric name: only plain confl_ names qualify
    const columns = r.fields.map((f) => f.name).filter((c) => /^confl_[a-z0-9_]+$/.test(c));
    for (const column of columns) {
      const family = this.#family(
        column,
        MAPPED[column] ?? UNKNOWN_HELP,
        column in MAPPED ? 'counter' : 'untyped',
      );
      family.replace(
        r.rows
          .filter((row) => row[column] !== null)
          .map((row) => ({
            labels: { datid: String(row.datid), datname: row.datname === null ? '' : String(row.datname) },
            value: Number(row[column]),
          })),
      );
    }
    for (const [column, f] of this.#families) if (!columns.includes(column)) f.clear();
  }

  clear(): void {
    for (const f of this.#families.values()) f.clear();
  }
}
