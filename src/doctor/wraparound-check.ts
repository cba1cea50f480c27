/**
 * Transaction ID wraparound: how old the oldest unfrozen transaction ID (datfrozenxid) and multixact
 * (datminmxid) of each database are. Autovacuum forces an anti-wraparound vacuum once a table passes
 * autovacuum_freeze_max_age (autovacuum_multixact_freeze_max_age); an age well beyond it means that
 * vacuum is not finishing or cannot advance, usually because something holds the horizon back (a
 * long transaction, a forgotten prepared transaction, a replication slot), which is named when seen.
 * Near 2^31 the server stops assigning IDs and every write fails. The same figures are exported as
 * pg_database_wraparound_age_* and pgmaintd_wraparound_freeze_max_age_distance.
 */
import type { Check, Finding } from './finding.js';

/** Past this share of its freeze_max_age, the forced vacuum is behind: warn. */
export const WARN_FREEZE_MAX_AGE_FACTOR = 1.5;
/** Past half the 2^31 IDs (the PostgresTransactionIdWraparound alert's line): fail. */
export const FAIL_AGE = 2 ** 31 / 2;

const SQL = `
  SELECT d.datname, k.kind, k.age::float8 AS age, k.max_age::float8 AS max_age
    FROM pg_database d,
         LATERAL (VALUES ('xid', age(d.datfrozenxid), current_setting('autovacuum_freeze_max_age')::float8),
                         ('multixact', mxid_age(d.datminmxid), current_setting('autovacuum_multixact_freeze_max_age')::float8))
                 AS k(kind, age, max_age)
   ORDER BY k.age / k.max_age DESC, d.datname
   LIMIT 1`;

// What holds the xmin horizon back, oldest first: sessions (pg_monitor sees them all), prepared
// transactions and replication slots. Names come from other roles: they are quoted, never trusted.
const HORIZON_SQL = `
  SELECT what, age FROM (
    SELECT format('session pid %s (%s, %s)', pid, coalesce(usename, '?'), coalesce(state, '?')) AS what,
           age(backend_xmin)::float8 AS age
      FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
    UNION ALL
    SELECT format('prepared transaction %L', gid), age(transaction)::float8 FROM pg_prepared_xacts
    UNION ALL
    SELECT format('replication slot %L', slot_name), age(coalesce(xmin, catalog_xmin))::float8
      FROM pg_replication_slots WHERE coalesce(xmin, catalog_xmin) IS NOT NULL
  ) h ORDER BY age DESC LIMIT 1`;

const ID = 'database.wraparound';
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

export const wraparoundCheck: Check = {
  ids: [ID],
  async run({ client }): Promise<Finding> {
    const r = (await client.query<{ datname: string; kind: string; age: number; max_age: number }>(SQL))
      .rows[0];
    const base = {
      id: ID,
      title: 'no database nears transaction ID wraparound',
      why: `autovacuum forces an anti-wraparound vacuum past autovacuum_freeze_max_age; well past it (${WARN_FREEZE_MAX_AGE_FACTOR}x) that vacuum is not keeping up, and near 2^31 the server stops accepting writes until the database is vacuumed`,
    };
    if (!r) return { ...base, status: 'info', found: 'no database visible' };
    const setting = r.kind === 'xid' ? 'autovacuum_freeze_max_age' : 'autovacuum_multixact_freeze_max_age';
    const found = `oldest: database ${JSON.stringify(r.datname)}, ${r.kind} age ${fmt(r.age)} (${setting} ${fmt(r.max_age)}; ${((100 * r.age) / 2 ** 31).toFixed(1)} % of 2^31)`;
    const status =
      r.age >= FAIL_AGE ? 'fail' : r.age > WARN_FREEZE_MAX_AGE_FACTOR * r.max_age ? 'warn' : 'ok';
    if (status === 'ok') return { ...base, status, found };
    const holder = (await client.query<{ what: string; age: number }>(HORIZON_SQL)).rows[0];
    const held = holder
      ? `; the oldest horizon is held by ${holder.what}, ${fmt(holder.age)} transactions old`
      : '';
    return {
      ...base,
      status,
      found: found + held,
      fix: {
        steps: [
          'end what holds the horizon back, or no vacuum can freeze past it: a long transaction (pg_terminate_backend), a forgotten prepared transaction (ROLLBACK PREPARED), an unused replication slot (pg_drop_replication_slot)',
          `then, in database ${JSON.stringify(r.datname)}, freeze its oldest tables first: SELECT oid::regclass, age(relfrozenxid) FROM pg_class WHERE relkind IN ('r','m','t') ORDER BY 2 DESC LIMIT 10; then VACUUM (FREEZE, VERBOSE) on each`,
          'see docs/runbook.md#postgrestransactionidwraparound',
        ],
      },
    };
  },
};
