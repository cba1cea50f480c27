/**
 * Transaction ID wraparound. Names from the alert sets teams copy: `pg_txid_current` is the name
 * awesome-prometheus-alerts' "Postgresql low XID consumption" rule reads (`rate(pg_txid_current[1m])`,
 * a custom query there), and pg_database_wraparound_age_datfrozenxid_seconds / _datminmxid_seconds
 * {datname} are postgres_exporter's (its optional database_wraparound collector; despite the suffix,
 * counts of transactions, not seconds). Beyond them: how far each database is from
 * autovacuum_freeze_max_age, where autovacuum starts forcing anti-wraparound vacuums.
 *
 * pg_txid_current is the next transaction ID (pg_snapshot_xmax of the current snapshot, 64-bit, so
 * it never wraps): reading it assigns no ID, unlike txid_current(), so the exporter does not consume
 * what it measures, and it works on a standby. Every database is covered, template0 included: its
 * age grows like the others' until autovacuum freezes it.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = `
  SELECT d.datname, age(d.datfrozenxid)::float8 AS xid_age, mxid_age(d.datminmxid)::float8 AS mxid_age,
         current_setting('autovacuum_freeze_max_age')::float8 AS xid_max,
         current_setting('autovacuum_multixact_freeze_max_age')::float8 AS mxid_max,
         pg_snapshot_xmax(pg_current_snapshot())::text::float8 AS next_xid
    FROM pg_database d
   ORDER BY d.datname`;

interface Row {
  datname: string;
  xid_age: number | null;
  mxid_age: number | null;
  xid_max: number;
  mxid_max: number;
  next_xid: number;
}

export class WraparoundCollector implements Collector {
  readonly name = 'database_wraparound';
  readonly #txid: CachedFamily;
  readonly #xidAge: CachedFamily<'datname'>;
  readonly #mxidAge: CachedFamily<'datname'>;
  readonly #distance: CachedFamily<'datname' | 'kind'>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#txid = new CachedFamily(registry, {
      name: 'pg_txid_current',
      help: 'The next transaction ID to be assigned (64-bit, never wraps); its rate is the transaction ID consumption.',
      type: 'gauge',
    });
    this.#xidAge = new CachedFamily(registry, {
      name: 'pg_database_wraparound_age_datfrozenxid_seconds',
      help: 'Age of the oldest transaction ID that has not been frozen (a count of transactions; postgres_exporter’s name).',
      type: 'gauge',
      labelNames: ['datname'],
    });
    this.#mxidAge = new CachedFamily(registry, {
      name: 'pg_database_wraparound_age_datminmxid_seconds',
      help: 'Age of the oldest multi-transaction ID that has been replaced with a transaction ID (a count; postgres_exporter’s name).',
      type: 'gauge',
      labelNames: ['datname'],
    });
    this.#distance = new CachedFamily(registry, {
      name: 'pgmaintd_wraparound_freeze_max_age_distance',
      help: 'IDs left before the age of datfrozenxid (kind="xid") or datminmxid (kind="multixact") reaches autovacuum_freeze_max_age (autovacuum_multixact_freeze_max_age), where autovacuum forces an anti-wraparound vacuum; negative once past.',
      type: 'gauge',
      labelNames: ['datname', 'kind'],
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const rows = (await client.query<Row>(SQL)).rows;
    this.#txid.replace(rows[0] ? [{ labels: {}, value: Number(rows[0].next_xid) }] : []);
    const ok = (v: number | null): v is number => v !== null;
    this.#xidAge.replace(
      rows.filter((r) => ok(r.xid_age)).map((r) => ({ labels: { datname: r.datname }, value: r.xid_age! })),
    );
    this.#mxidAge.replace(
      rows.filter((r) => ok(r.mxid_age)).map((r) => ({ labels: { datname: r.datname }, value: r.mxid_age! })),
    );
    this.#distance.replace(
      rows.flatMap((r) => [
        ...(ok(r.xid_age)
          ? [{ labels: { datname: r.datname, kind: 'xid' }, value: r.xid_max - r.xid_age }]
          : []),
        ...(ok(r.mxid_age)
          ? [{ labels: { datname: r.datname, kind: 'multixact' }, value: r.mxid_max - r.mxid_age }]
          : []),
      ]),
    );
  }

  clear(): void {
    this.#txid.clear();
    this.#xidAge.clear();
    this.#mxidAge.clear();
    this.#distance.clear();
  }
}
