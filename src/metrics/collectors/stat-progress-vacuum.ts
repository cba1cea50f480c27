/**
 * pg_stat_progress_vacuum_* per running VACUUM (manual or autovacuum), as postgres_exporter's
 * "stat_progress_vacuum" collector exports them (collector/pg_stat_progress_vacuum.go): phase{phase}
 * (1 for the current of the seven phases, 0 for the others), heap_blks (total), heap_blks_scanned,
 * heap_blks_vacuumed, index_vacuums, max_dead_tuples and num_dead_tuples, labelled {datname, relname}.
 *
 * Like the reference it reads pg_stat_get_progress_info('VACUUM') by parameter number, on every
 * major: from PostgreSQL 17, parameters 6 and 7 are max_dead_tuple_bytes and dead_tuple_bytes, so
 * max_dead_tuples and num_dead_tuples are then bytes (their ratio, how full the dead-tuple store is,
 * means the same). relname is schema-qualified unless in public (as regclass shows it under the
 * default search_path) for a vacuum in the database polled, the table's OID for one in another database (pg_class is per database), "unknown" for a
 * session the role may not see (without pg_read_all_stats the parameters are NULL, and read as 0).
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily, type Sample } from '../family.js';

/** The values of param1, in order (the reference's list, which the view's CASE spells out). */
export const VACUUM_PHASES = [
  'initializing',
  'scanning heap',
  'vacuuming indexes',
  'vacuuming heap',
  'cleaning up indexes',
  'truncating heap',
  'performing final cleanup',
] as const;

// the OUT parameters by name rather than the reference's column list, which names all twenty: a
// major that changes their count would break the alias list, not this
//
// The reference's relname is s.relid::regclass::text, which qualifies a table whose schema is not on
// the session's search_path: pg-maintd's sessions have pg_catalog alone, so the name is spelled here
// as regclass spells it under the default search_path ("$user", public), the reference's usual one.
const SQL = `
  SELECT d.datname,
         coalesce(CASE WHEN d.datname = current_database() THEN
                    (SELECT CASE WHEN n.nspname IN ('public', current_user) THEN quote_ident(c.relname)
                                 ELSE quote_ident(n.nspname) || '.' || quote_ident(c.relname) END
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = s.relid) END,
                  s.relid::text) AS relname,
         s.param1 AS phase, s.param2 AS heap_blks_total, s.param3 AS heap_blks_scanned,
         s.param4 AS heap_blks_vacuumed, s.param5 AS index_vacuum_count,
         s.param6 AS max_dead_tuples, s.param7 AS num_dead_tuples
    FROM pg_stat_get_progress_info('VACUUM') s
    LEFT JOIN pg_database d ON s.datid = d.oid`;

const VALUES: Array<[column: string, metric: string, help: string]> = [
  ['heap_blks_total', 'heap_blks', 'Total number of heap blocks in the table being vacuumed.'],
  ['heap_blks_scanned', 'heap_blks_scanned', 'Number of heap blocks scanned so far.'],
  ['heap_blks_vacuumed', 'heap_blks_vacuumed', 'Number of heap blocks vacuumed so far.'],
  ['index_vacuum_count', 'index_vacuums', 'Number of completed index vacuum cycles.'],
  [
    'max_dead_tuples',
    'max_dead_tuples',
    'Maximum number of dead tuples that can be stored before cleanup is performed.',
  ],
  ['num_dead_tuples', 'num_dead_tuples', 'Current number of dead tuples found so far.'],
];

type Label = 'datname' | 'relname';
type Row = Record<string, string | null>;

export class StatProgressVacuumCollector implements Collector {
  readonly name = 'stat_progress_vacuum';
  readonly #phase: CachedFamily<Label | 'phase'>;
  readonly #values: Array<[string, CachedFamily<Label>]>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#phase = new CachedFamily(registry, {
      name: 'pg_stat_progress_vacuum_phase',
      help: "Current vacuum phase (1 = active, 0 = inactive). Label 'phase' is human-readable.",
      type: 'gauge',
      labelNames: ['datname', 'relname', 'phase'],
    });
    this.#values = VALUES.map(([column, metric, help]) => [
      column,
      new CachedFamily<Label>(registry, {
        name: `pg_stat_progress_vacuum_${metric}`,
        help,
        type: 'gauge',
        labelNames: ['datname', 'relname'],
      }),
    ]);
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const rows = (await client.query<Row>(SQL)).rows;
    const phase: Sample<Label | 'phase'>[] = [];
    const values = new Map<string, Sample<Label>[]>(this.#values.map(([c]) => [c, []]));
    const seen = new Set<string>();
    for (const r of rows) {
      const labels = { datname: r.datname ?? 'unknown', relname: r.relname ?? 'unknown' };
      // two vacuums the role may not see are both unknown/unknown: one series set, not a duplicate
      const key = `${labels.datname}\0${labels.relname}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const current = r.phase === null ? undefined : Number(r.phase);
      VACUUM_PHASES.forEach((p, i) =>
        phase.push({ labels: { ...labels, phase: p }, value: i === current ? 1 : 0 }),
      );
      for (const [column, samples] of values) samples.push({ labels, value: Number(r[column] ?? 0) });
    }
    this.#phase.replace(phase);
    for (const [column, family] of this.#values) family.replace(values.get(column)!);
  }

  clear(): void {
    this.#phase.clear();
    for (const [, f] of this.#values) f.clear();
  }
}
