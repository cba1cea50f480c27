/**
 * Locks: pg_locks_count{datname,mode} as postgres_exporter has it (zero-filled for every database and
 * mode), and beyond it what the seed guide's lock-monitoring query answers, computed with
 * pg_blocking_pids(): blocked sessions and the longest lock wait per database. A wait past the
 * threshold is logged once, naming the blocked and blocking sessions, so whoever the alert pages
 * sees the culprit.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';
import { maskQueryText } from '../query-text.js';

const MODES = [
  'accesssharelock',
  'rowsharelock',
  'rowexclusivelock',
  'shareupdateexclusivelock',
  'sharelock',
  'sharerowexclusivelock',
  'exclusivelock',
  'accessexclusivelock',
  'sireadlock',
];

const COUNT_SQL = `
  SELECT d.datname, m.mode, coalesce(l.n, 0) AS n
    FROM pg_database d
   CROSS JOIN unnest($1::text[]) AS m(mode)
    LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS n
                 FROM pg_locks WHERE database IS NOT NULL GROUP BY 1, 2) l
      ON l.database = d.oid AND l.mode = m.mode`;

/** Blocked sessions with their blockers. PostgreSQL 14 added pg_locks.waitstart; before, state_change. */
function blockedSql(serverVersionNum: number): string {
  const since =
    serverVersionNum >= 140000
      ? '(SELECT min(waitstart) FROM pg_locks WHERE pid = a.pid AND NOT granted)'
      : 'a.state_change';
  return `
    SELECT a.datname, a.pid, a.usename, a.application_name, left(a.query, 300) AS query,
           extract(epoch FROM clock_timestamp() - coalesce(${since}, a.state_change)) AS wait_seconds,
           b.pid AS blocking_pid, b.usename AS blocking_user, b.application_name AS blocking_app,
           b.state AS blocking_state, left(b.query, 300) AS blocking_query
      FROM pg_stat_activity a
     CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS bp(pid)
      JOIN pg_stat_activity b ON b.pid = bp.pid
     WHERE a.datname IS NOT NULL`;
}

interface BlockedRow {
  datname: string;
  pid: number;
  usename: string | null;
  application_name: string | null;
  query: string | null;
  wait_seconds: string;
  blocking_pid: number;
  blocking_user: string | null;
  blocking_app: string | null;
  blocking_state: string | null;
  blocking_query: string | null;
}

export class LocksCollector implements Collector {
  readonly name = 'locks';
  readonly #count: CachedFamily<'datname' | 'mode'>;
  readonly #blocked: CachedFamily<'datname'>;
  readonly #waitMax: CachedFamily<'datname'>;
  /** Waits already logged (blocked pid and blocker), so one wait gives one log line. */
  #logged = new Set<string>();

  constructor(
    registry: Registry,
    private readonly opts: { logWaitsOverSeconds: number; intervalMs?: number },
  ) {
    this.#count = new CachedFamily(registry, {
      name: 'pg_locks_count',
      help: 'Number of locks',
      type: 'gauge',
      labelNames: ['datname', 'mode'],
    });
    this.#blocked = new CachedFamily(registry, {
      name: 'pgmaintd_blocked_sessions',
      help: 'Sessions waiting for a lock another session holds (pg_blocking_pids), per database.',
      type: 'gauge',
      labelNames: ['datname'],
    });
    this.#waitMax = new CachedFamily(registry, {
      name: 'pgmaintd_lock_wait_max_seconds',
      help: 'The longest current wait for a lock, per database (0 when nothing waits).',
      type: 'gauge',
      labelNames: ['datname'],
    });
  }

  get intervalMs(): number | undefined {
    return this.opts.intervalMs;
  }

  async collect({ client, serverVersionNum, logger }: CollectorContext): Promise<void> {
    const counts = await client.query<{ datname: string; mode: string; n: string }>(COUNT_SQL, [MODES]);
    const blocked = await client.query<BlockedRow>(blockedSql(serverVersionNum));

    const perDb = new Map<string, { pids: Set<number>; max: number }>();
    for (const r of counts.rows) if (!perDb.has(r.datname)) perDb.set(r.datname, { pids: new Set(), max: 0 });
    const seen = new Set<string>();
    for (const r of blocked.rows) {
      const db = perDb.get(r.datname) ?? { pids: new Set<number>(), max: 0 };
      perDb.set(r.datname, db);
      db.pids.add(r.pid);
      const wait = Number(r.wait_seconds);
      db.max = Math.max(db.max, wait);
      const key = `${r.pid}:${r.blocking_pid}`;
      seen.add(key);
      if (wait >= this.opts.logWaitsOverSeconds && !this.#logged.has(key)) {
        this.#logged.add(key);
        logger.warn(
          {
            collector: 'locks',
            datname: r.datname,
            waitSeconds: Math.round(wait * 10) / 10,
            // as written, literals and all (pg_stat_activity): a password in ALTER ROLE must not reach the log
            blocked: { pid: r.pid, user: r.usename, application: r.application_name, query: masked(r.query) },
            blocking: {
              pid: r.blocking_pid,
              user: r.blocking_user,
              application: r.blocking_app,
              state: r.blocking_state,
              query: masked(r.blocking_query),
            },
          },
          'session blocked on a lock',
        );
      }
    }
    this.#logged = new Set([...this.#logged].filter((k) => seen.has(k))); // a wait that ended may be logged again

    this.#count.replace(
      counts.rows.map((r) => ({ labels: { datname: r.datname, mode: r.mode }, value: Number(r.n) })),
    );
    this.#blocked.replace([...perDb].map(([datname, d]) => ({ labels: { datname }, value: d.pids.size })));
    this.#waitMax.replace([...perDb].map(([datname, d]) => ({ labels: { datname }, value: d.max })));
  }

  clear(): void {
    this.#count.clear();
    this.#blocked.clear();
    this.#waitMax.clear();
  }
}

function masked(query: string | null): string | null {
  return query === null ? null : maskQueryText(query);
}
