/**
 * pg_stat_activity: pg_stat_activity_count and pg_stat_activity_max_tx_duration with the labels
 * datname, state, usename, application_name, backend_type, wait_event_type, wait_event; every state of
 * every database is zero-filled, as postgres_exporter does, so `sum by (datname)` alerts work. The
 * daemon's own sessions are left out. Beyond the reference: the longest idle-in-transaction age.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const LABELS = [
  'datname',
  'state',
  'usename',
  'application_name',
  'backend_type',
  'wait_event_type',
  'wait_event',
] as const;
type Label = (typeof LABELS)[number];

export const STATES = [
  'active',
  'idle',
  'idle in transaction',
  'idle in transaction (aborted)',
  'fastpath function call',
  'disabled',
];

// Our own sessions (application_name pg-maintd: the poller, backups, pg_dump) are not the application's.
const NOT_OURS = `pid <> pg_backend_pid() AND application_name IS DISTINCT FROM 'pg-maintd'`;

const GROUPS_SQL = `
  SELECT coalesce(datname, '') AS datname, coalesce(state, '') AS state, coalesce(usename, '') AS usename,
         coalesce(application_name, '') AS application_name, coalesce(backend_type, '') AS backend_type,
         coalesce(wait_event_type, '') AS wait_event_type, coalesce(wait_event, '') AS wait_event,
         count(*) AS n,
         coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) AS max_tx
    FROM pg_stat_activity
   -- like the reference (pg_database x states LEFT JOIN pg_stat_activity): client sessions only, so
   -- background processes (no database, no state) do not count against max_connections panels
   WHERE ${NOT_OURS} AND datname IS NOT NULL AND state = ANY($1)
   GROUP BY 1, 2, 3, 4, 5, 6, 7`;

const IDLE_IN_TX_SQL = `
  SELECT d.datname,
         coalesce(max(extract(epoch FROM clock_timestamp() - a.state_change)), 0) AS age
    FROM pg_database d
    LEFT JOIN pg_stat_activity a
      ON a.datname = d.datname AND a.state LIKE 'idle in transaction%' AND a.pid <> pg_backend_pid() AND a.application_name IS DISTINCT FROM 'pg-maintd'
   GROUP BY 1`; // every database, as the reference zero-fills every database of pg_database

type Row = Record<Label, string> & { n: string; max_tx: string };

export class ActivityCollector implements Collector {
  readonly name = 'stat_activity';
  readonly #count: CachedFamily<Label>;
  readonly #maxTx: CachedFamily<Label>;
  readonly #idleInTx: CachedFamily<'datname'>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#count = new CachedFamily(registry, {
      name: 'pg_stat_activity_count',
      help: 'number of connections in this state',
      type: 'gauge',
      labelNames: LABELS,
    });
    this.#maxTx = new CachedFamily(registry, {
      name: 'pg_stat_activity_max_tx_duration',
      help: 'max duration in seconds any active transaction has been running',
      type: 'gauge',
      labelNames: LABELS,
    });
    this.#idleInTx = new CachedFamily(registry, {
      name: 'pgmaintd_idle_in_transaction_max_seconds',
      help: 'The longest time a session has been idle in a transaction, per database (0 when none is).',
      type: 'gauge',
      labelNames: ['datname'],
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const groups = await client.query<Row>(GROUPS_SQL, [STATES]);
    const idle = await client.query<{ datname: string; age: string }>(IDLE_IN_TX_SQL);
    const count = groups.rows.map((r) => ({ labels: pick(r), value: Number(r.n) }));
    const maxTx = groups.rows.map((r) => ({ labels: pick(r), value: Number(r.max_tx) }));
    const present = new Set(groups.rows.map((r) => `${r.datname}\0${r.state}`));
    for (const { datname } of idle.rows) {
      for (const state of STATES) {
        if (present.has(`${datname}\0${state}`)) continue;
        const labels = {
          datname,
          state,
          usename: '',
          application_name: '',
          backend_type: '',
          wait_event_type: '',
          wait_event: '',
        };
        count.push({ labels, value: 0 });
        maxTx.push({ labels, value: 0 });
      }
    }
    this.#count.replace(count);
    this.#maxTx.replace(maxTx);
    this.#idleInTx.replace(idle.rows.map((r) => ({ labels: { datname: r.datname }, value: Number(r.age) })));
  }

  clear(): void {
    this.#count.clear();
    this.#maxTx.clear();
    this.#idleInTx.clear();
  }
}

function pick(r: Row): Record<Label, string> {
  return Object.fromEntries(LABELS.map((l) => [l, r[l]])) as Record<Label, string>;
}
