/**
 * The poller runs each collector on its own interval against a small pool of its own (statement and
 * lock timeouts set, application_name pg-maintd) and caches the results; /metrics serves the cache.
 * A scrape never touches the database, so it costs the same whether the database is idle,
 * overloaded or down. pg_up is 1 only when the last connection attempt succeeded.
 *
 * Server-wide collectors poll the database of DATABASE_URL. Per-database collectors (table
 * statistics) poll each database of METRICS_DATABASES (or every database that allows connections,
 * for `*`) in rounds, a few databases at a time (database-rounds.ts). Every connection, whatever its
 * database, comes out of one budget (METRICS_MAX_CONNECTIONS, see connection-budget.ts): sixty
 * databases do not cost sixty connections. What each poll came to is booked in collector-health.ts.
 */
import type { Registry } from 'prom-client';
import type { DbPool, PoolSettings } from '../db/pool.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import type { Collector } from './collector.js';
import { describeTarget } from '../core/database-url.js';
import { CollectorHealthBook, type CollectorHealth } from './collector-health.js';
import { ConnectionBudget, type Lease } from './connection-budget.js';
import { DatabasePools } from './database-pools.js';
import { DatabaseRounds } from './database-rounds.js';
import { EARLY_POLL_GAP_MS, PgUp } from './pg-up.js';

export type { CollectorHealth } from './collector-health.js';

export interface PollerOptions {
  db: PoolSettings;
  registry: Registry;
  logger: Logger;
  collectors: Collector[];
  intervalMs: number;
  /** Per-collector intervals (METRICS_COLLECTOR_INTERVALS), over the collector's own and intervalMs. */
  intervals?: Readonly<Partial<Record<string, number>>>;
  statementTimeoutMs: number;
  lockTimeoutMs: number;
  /** Databases of the per-database collectors, or '*' for every database that allows connections. */
  databases?: readonly string[] | '*';
  /** METRICS_MAX_CONNECTIONS: the connections of every database together (3 when unset). */
  maxConnections?: number;
}

const DEFAULT_MAX_CONNECTIONS = 3;

export class Poller extends Service {
  readonly name = 'metrics-poller';
  /** The pool of the database of DATABASE_URL: server-wide collectors, and pg_up. */
  readonly pool: DbPool;
  readonly #o: PollerOptions;
  readonly #log: Logger;
  readonly #main: string;
  readonly #pools: DatabasePools;
  readonly #budget: ConnectionBudget;
  readonly #rounds: DatabaseRounds;
  readonly #health: CollectorHealthBook;
  readonly #up: PgUp;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #inFlight = new Set<Promise<void>>();
  #serverVersionNum: number | undefined;

  constructor(o: PollerOptions) {
    super();
    this.#o = o;
    this.#log = o.logger.child({ component: 'metrics' });
    const max = o.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const { statementTimeoutMs, lockTimeoutMs } = o;
    this.#pools = new DatabasePools({ db: o.db, logger: o.logger, max, statementTimeoutMs, lockTimeoutMs });
    this.pool = this.#pools.main;
    this.#main = this.#pools.mainDatabase;
    // the families are made in the order /metrics lists them
    this.#budget = new ConnectionBudget({
      max,
      main: this.#main,
      open: (database) => this.#pools.of(database).connect(),
      targetOf: (database) => describeTarget(this.#pools.of(database).target),
      // the server-wide collectors come back every interval: a connection unused for two is not needed
      idleMs: 2 * o.intervalMs,
      capacityEveryMs: o.intervalMs,
      registry: o.registry,
      logger: o.logger,
    });
    this.#rounds = new DatabaseRounds({
      databases: o.databases,
      collectors: o.collectors,
      budget: this.#budget,
      pools: this.#pools,
      registry: o.registry,
      logger: this.#log,
      lease: (database) => this.#lease(database),
      forgotten: (database) => this.#health.forgetDatabase(database),
      stopping: () => this.stopping,
    });
    this.#up = new PgUp({
      registry: o.registry,
      running: () => this.running,
      pollEarly: (up) => this.#pollEarly(up),
    });
    this.#health = new CollectorHealthBook(o.registry, this.#log);
  }

  /** Every pool the poller holds now (for pgmaintd_db_pool_clients). */
  pools(): DbPool[] {
    return this.#pools.all();
  }

  /** pg_up as it is now: whether the last connection attempt succeeded. */
  get up(): boolean {
    return this.#up.up;
  }

  /** Each collector's health as the poller last saw it (read from memory, for the status page). */
  collectorHealth(): CollectorHealth[] {
    return this.#health.report(this.#o.collectors, (c) => this.intervalOf(c));
  }

  /** How often `c` polls: METRICS_COLLECTOR_INTERVALS, else the collector's own, else METRICS_INTERVAL. */
  intervalOf(c: Collector): number {
    return this.#o.intervals?.[c.name] || c.intervalMs || this.#o.intervalMs;
  }

  protected async onStart(): Promise<void> {
    for (const c of this.#o.collectors) this.#schedule(c, 0);
  }

  protected async onStop(): Promise<void> {
    this.#up.stop();
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    await Promise.allSettled([...this.#inFlight]);
    await this.closeConnections();
  }

  /** Closes every connection and pool (stop() does; `status` polls once without starting). */
  async closeConnections(): Promise<void> {
    await this.#budget.close();
    await Promise.allSettled(this.pools().map((p) => p.stop()));
  }

  /** The connections the poller may hold now (METRICS_MAX_CONNECTIONS, or fewer near the server's limit). */
  get connectionBudget(): number {
    return this.#budget.limit;
  }

  /** Polls every collector once now (tests, and the first round at start). */
  async pollAll(): Promise<void> {
    await Promise.all(this.#o.collectors.map((c) => this.#run(c)));
  }

  /**
   * The outcome of another connection attempt to the same database (the readiness probe's, every
   * READYZ_INTERVAL): pg_up follows the latest attempt, so it drops within seconds of an outage rather
   * than at the next poll.
   */
  reportConnection(ok: boolean): void {
    if (!this.running) return;
    this.#up.set(ok);
  }

  /** pg_up changed (pg-up.ts): every collector polls early when it is down; when it is up, the failing ones. */
  #pollEarly(up: boolean) {
    for (const c of this.#o.collectors) {
      // one that polls this often anyway would gain nothing
      if (this.intervalOf(c) <= EARLY_POLL_GAP_MS) continue;
      if ((!up || this.#health.isFailing(c.name)) && this.#timers.has(c.name)) {
        clearTimeout(this.#timers.get(c.name));
        this.#schedule(c, 0);
      }
    }
  }

  #schedule(c: Collector, delayMs: number) {
    if (this.stopping) return;
    const timer = setTimeout(() => {
      this.#timers.delete(c.name); // a collector without a pending timer is polling now
      const t0 = performance.now();
      const run = this.#run(c).finally(() => {
        this.#inFlight.delete(run);
        // a per-database round starts one interval after the last one started (it stops starting
        // databases when its interval is up), so each database is polled at least every two intervals
        const spent = c.scope === 'database' ? performance.now() - t0 : 0;
        this.#schedule(c, Math.max(0, this.intervalOf(c) - spent));
      });
      this.#inFlight.add(run);
    }, delayMs);
    timer.unref();
    this.#timers.set(c.name, timer);
  }

  async #run(c: Collector): Promise<void> {
    const t0 = performance.now();
    this.#health.pollStarted();
    try {
      const ok = c.scope === 'database' ? await this.#runPerDatabase(c) : await this.#attempt(c, this.#main);
      this.#health.pollEnded(c.name, ok);
    } finally {
      this.#health.pollTook(c.name, (performance.now() - t0) / 1000);
    }
  }

  /**
   * One round of a per-database collector (database-rounds.ts). It succeeds when it succeeded in
   * every database it reached; when the databases cannot be listed, its series are dropped.
   */
  async #runPerDatabase(c: Collector): Promise<boolean> {
    const deadline = performance.now() + this.intervalOf(c);
    let databases: readonly string[];
    try {
      databases = await this.#rounds.list();
      this.#health.succeeded(c.name, { collector: c.name });
    } catch (err) {
      c.clear();
      this.#failed(c.name, err, { collector: c.name }, 'cannot list the databases to poll; series dropped');
      return false;
    }
    return this.#rounds.round(c, databases, deadline, (database) => this.#attempt(c, database));
  }

  /** One poll of one collector in one database; false (series dropped, failure logged once) on error. */
  async #attempt(c: Collector, database: string): Promise<boolean> {
    const perDatabase = c.scope === 'database';
    const key = perDatabase ? `${c.name}@${database}` : c.name;
    const fields: Record<string, string> = perDatabase
      ? { collector: c.name, database }
      : { collector: c.name };
    let lease: Lease | undefined;
    let failed = false;
    try {
      lease = await this.#lease(database);
      const client = lease.client;
      this.#serverVersionNum ??= Number(
        (await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v,
      );
      await c.collect({ client, database, serverVersionNum: this.#serverVersionNum, logger: this.#log });
      this.#health.succeeded(key, fields);
      return true;
    } catch (err) {
      failed = true;
      c.clear(perDatabase ? database : undefined);
      // dropped since it was discovered: gone, not failing
      if (perDatabase && this.#rounds.dropped(database, err)) return true;
      this.#failed(
        key,
        err,
        fields,
        perDatabase && this.#rounds.unreachableByName(database)
          ? 'database is listed but not found by the name it reads back as (not valid UTF-8, in a SQL_ASCII cluster?); its series are dropped: rename it, or list the databases to poll in METRICS_DATABASES'
          : 'collector failed; its series are dropped until it succeeds',
      );
      return false;
    } finally {
      lease?.release(failed); // a connection that failed a poll is closed, not reused
    }
  }

  /** A failure is booked (and logged once, when it starts: an outage is not an error storm). */
  #failed(key: string, err: unknown, fields: Record<string, string>, message: string) {
    const { kind } = this.#health.failed(key, err, fields, message);
    // the server may be another one when it is back (restarted, upgraded): its version is read again
    if (kind === 'connection_lost' || kind === 'connection_refused') this.#serverVersionNum = undefined;
  }

  /** A connection out of the budget; one to the main database also says whether pg_up holds. */
  async #lease(database: string): Promise<Lease> {
    if (database !== this.#main) return this.#budget.acquire(database);
    try {
      const lease = await this.#budget.acquire(database);
      this.#up.set(true);
      return lease;
    } catch (err) {
      if (!this.stopping) this.#up.set(false);
      throw err;
    }
  }
}
