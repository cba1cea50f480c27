/**
 * The rounds of the per-database collectors (table statistics): which databases they poll
 * (METRICS_DATABASES, or with '*' every database that allows connections, discovered again each
 * round), and in what order. Sixty databases do not cost sixty connections: a round takes as many at
 * a time as the budget has connections (connection-budget.ts), stops starting databases when its
 * interval is up, and those it did not reach go first next round, so none waits behind the others for
 * good. A database that is dropped has its series, its failures and its pool forgotten.
 */
import { Gauge, type Registry } from 'prom-client';
import { classify } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import type { Collector } from './collector.js';
import type { ConnectionBudget, Lease } from './connection-budget.js';
import type { DatabasePools } from './database-pools.js';

export interface DatabaseRoundsOptions {
  /** METRICS_DATABASES, or '*' for every database that allows connections; unset: the main one. */
  databases: readonly string[] | '*' | undefined;
  collectors: readonly Collector[];
  budget: ConnectionBudget;
  pools: DatabasePools;
  registry: Registry;
  logger: Logger;
  /** A connection out of the budget (the poller's: one to the main database also says whether pg_up holds). */
  lease(database: string): Promise<Lease>;
  /** A database that is gone: what the poller keeps of it (its failures) goes too. */
  forgotten(database: string): void;
  /** Whether the poller is stopping: a round starts no more databases. */
  stopping(): boolean;
}

const DISCOVER_SQL = `
  SELECT datname FROM pg_database
   WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT')
   ORDER BY datname`;

export class DatabaseRounds {
  readonly #o: DatabaseRoundsOptions;
  readonly #log: Logger;
  readonly #main: string;
  /**
   * Per per-database collector: the databases its last round did not reach, in the order they were
   * due; they go first next round, in that order, so the rounds take the databases in turn.
   */
  readonly #unreached = new Map<string, readonly string[]>();
  readonly #unreachedGauge: Gauge<'collector'>;
  /** Per-database collectors whose last round did not reach every database. */
  readonly #behind = new Set<string>();
  /** With '*': the databases the last discovery found. */
  #known: readonly string[] = [];
  /**
   * With '*': databases a poll found gone (3D000) since discovery last listed them. One listed again
   * is there but cannot be reached by the name it reads back as (a name that is not UTF-8, in a
   * SQL_ASCII cluster, reads back altered): it fails from then on, said once, rather than being
   * forgotten and found again every round.
   */
  readonly #vanished = new Set<string>();

  /** `logger` is the poller's: a round is logged as the poller's. */
  constructor(o: DatabaseRoundsOptions) {
    this.#o = o;
    this.#log = o.logger;
    this.#main = o.pools.mainDatabase;
    this.#unreachedGauge = new Gauge({
      name: 'pgmaintd_metrics_databases_unreached',
      help: 'Databases the last round of a per-database collector did not reach within its interval (they go first in the next round).',
      labelNames: ['collector'],
      registers: [o.registry],
    });
  }

  /** The databases the per-database collectors poll now; with '*', discovered on each round. */
  async list(): Promise<readonly string[]> {
    const wanted = this.#o.databases ?? [this.#main];
    if (wanted !== '*') {
      // the budget looks at the server's free slots on a connection to the main database: when
      // nothing else polls it, this round does
      if (this.#o.budget.capacityStale && !wanted.includes(this.#main))
        await this.#o.lease(this.#main).then(
          (l) => l.release(),
          () => undefined,
        );
      return wanted;
    }
    const lease = await this.#o.lease(this.#main);
    let failed = false;
    try {
      const found = (await lease.client.query<{ datname: string }>(DISCOVER_SQL)).rows.map((r) => r.datname);
      this.#forget(this.#known.filter((d) => !found.includes(d)));
      for (const d of this.#vanished) if (!found.includes(d)) this.#vanished.delete(d);
      this.#known = found;
      return found;
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      lease.release(failed);
    }
  }

  /**
   * One round of `c` over `databases` (as list() gave them): each database once, through `attempt`,
   * as many at a time as the budget has connections, each on a connection of its own closed after its
   * poll. A slow database holds one connection while the others go on; a round that outlasts
   * `deadline` starts no more databases. True when `attempt` succeeded in every database it reached;
   * a database that failed (its series dropped by `attempt`) is tried again next round.
   */
  async round(
    c: Collector,
    databases: readonly string[],
    deadline: number,
    attempt: (database: string) => Promise<boolean>,
  ): Promise<boolean> {
    const listed = new Set(databases);
    const behind = (this.#unreached.get(c.name) ?? []).filter((d) => listed.has(d));
    const due = new Set(behind);
    const order = [...behind, ...databases.filter((d) => !due.has(d))];
    let next = 0;
    let ok = true;
    const worker = async () => {
      while (next < order.length && !this.#o.stopping() && performance.now() < deadline) {
        const database = order[next++]!;
        ok = (await attempt(database)) && ok;
      }
    };
    // the budget decides how many run at once; each worker queues again after each database
    await Promise.all(Array.from({ length: Math.min(this.#o.budget.max, order.length) }, worker));
    const unreached = this.#o.stopping() ? [] : order.slice(next);
    this.#unreached.set(c.name, unreached);
    this.#unreachedGauge.set({ collector: c.name }, unreached.length);
    // behind is not failing (pg_exporter_last_scrape_error stays 0): said once, when it starts
    if (unreached.length > 0 && !this.#behind.has(c.name)) {
      this.#behind.add(c.name);
      this.#log.warn(
        {
          collector: c.name,
          unreached: unreached.length,
          databases: order.length,
          budget: this.#o.budget.limit,
        },
        'a round of a per-database collector did not reach every database within its interval; those go first next round (raise METRICS_MAX_CONNECTIONS or the interval)',
      );
    } else if (unreached.length === 0 && this.#behind.delete(c.name))
      this.#log.info({ collector: c.name }, 'per-database collector reaches every database again');
    return ok;
  }

  /**
   * Whether a poll of `database` failed because the database was dropped since it was discovered
   * (with '*'): then it is gone, not failing, and is forgotten now.
   */
  dropped(database: string, err: unknown): boolean {
    if (this.#o.databases !== '*' || classify(err).code !== '3D000') return false;
    if (this.#vanished.has(database)) return false; // listed again: see #vanished
    this.#vanished.add(database);
    this.#forget([database]);
    this.#known = this.#known.filter((d) => d !== database);
    return true;
  }

  /** Whether `database` is listed but was not found by its name when polled (see #vanished). */
  unreachableByName(database: string): boolean {
    return this.#vanished.has(database);
  }

  /** A database that is gone: its series and its pool go too. */
  #forget(gone: string[]) {
    for (const database of gone) {
      for (const c of this.#o.collectors) if (c.scope === 'database') c.clear(database);
      this.#o.forgotten(database);
      this.#o.pools.drop(database);
      this.#log.info({ database }, 'database no longer listed; its per-database series are dropped');
    }
  }
}
