/**
 * The poller runs each collector on its own interval against a small pool of its own (statement and
 * lock timeouts set, application_name pg-maintd) and caches the results; /metrics serves the cache.
 * A scrape never touches the database, so it costs the same whether the database is idle,
 * overloaded or down. pg_up is 1 only when the last connection attempt succeeded.
 *
 * Server-wide collectors poll the database of DATABASE_URL. Per-database collectors (table
 * statistics) poll each database of METRICS_DATABASES (or every database that allows connections,
 * for `*`) in rounds, a few databases at a time. Every connection, whatever its database, comes out of
 * one budget (METRICS_MAX_CONNECTIONS, see connection-budget.ts): sixty databases do not cost sixty
 * connections.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { DbPool, type PoolSettings } from '../db/pool.js';
import { classify } from '../db/sqlstate.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import type { Collector } from './collector.js';
import { errorMessage } from '../core/errors.js';
import { describeTarget } from '../core/database-url.js';
import { ConnectionBudget, type Lease } from './connection-budget.js';

/** What the status page shows of a collector: its last poll, and the last success and failure. */
export interface CollectorHealth {
  collector: string;
  /** Whether its last poll succeeded; null before the first one finished. */
  ok: boolean | null;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  /** Why the last failure failed (kind, SQLSTATE, the server's message), while it is failing. */
  error: string | null;
  durationSeconds: number | null;
  intervalSeconds: number;
}

/** At most one round of early polls (for a change of pg_up) in this long. */
const EARLY_POLL_GAP_MS = 5000;

/** An error's message as one short line: a status page or a terminal shows it, never a stack. */
const ERROR_TEXT_MAX = 300;

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

const DISCOVER_SQL = `
  SELECT datname FROM pg_database
   WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT')
   ORDER BY datname`;

export class Poller extends Service {
  readonly name = 'metrics-poller';
  /** The pool of the database of DATABASE_URL: server-wide collectors, and pg_up. */
  readonly pool: DbPool;
  readonly #o: PollerOptions;
  readonly #log: Logger;
  readonly #main: string;
  /**
   * Pools of the other databases the per-database collectors poll: they only open connections (each
   * closed after its poll); the budget decides how many, whatever the database.
   */
  readonly #dbPools = new Map<string, DbPool>();
  readonly #budget: ConnectionBudget;
  /**
   * Per per-database collector: the databases its last round did not reach, in the order they were
   * due; they go first next round, in that order, so the rounds take the databases in turn.
   */
  readonly #unreached = new Map<string, readonly string[]>();
  readonly #unreachedGauge: Gauge<'collector'>;
  /** Per-database collectors whose last round did not reach every database. */
  readonly #behind = new Set<string>();
  #known: readonly string[] = [];
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #inFlight = new Set<Promise<void>>();
  /** Undefined until the first attempt: the first answer is no change to react to. */
  #upNow: boolean | undefined;
  /** When the collectors last polled early for a change of pg_up, and the round waiting its turn. */
  #earlyAt = 0;
  #earlyTimer: NodeJS.Timeout | undefined;
  /** Keys (collector, or collector@database) failing now: each failure is logged once, not per poll. */
  readonly #failing = new Set<string>();
  readonly #lastDuration = new Map<string, number>();
  /** Per collector: the last poll's outcome and when each kind last happened, for the status page. */
  readonly #health = new Map<string, { ok: boolean; success?: number; failure?: number }>();
  /** Per failing key: why, kept while it fails (what the log said once). */
  readonly #errors = new Map<string, string>();
  #serverVersionNum: number | undefined;
  readonly #up: Gauge;
  readonly #success: Gauge<'collector'>;
  readonly #duration: Gauge<'collector'>;
  readonly #lastSuccess: Gauge<'collector'>;
  readonly #lastError: Gauge;
  readonly #lastScrape: Gauge;
  readonly #scrapes: Counter;

  constructor(o: PollerOptions) {
    super();
    this.#o = o;
    this.#log = o.logger.child({ component: 'metrics' });
    this.pool = this.#newPool('metrics');
    this.#main = this.pool.target.database;
    const r = [o.registry];
    this.#budget = new ConnectionBudget({
      max: o.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      main: this.#main,
      open: (database) => this.#poolOf(database).connect(),
      targetOf: (database) => describeTarget(this.#poolOf(database).target),
      // the server-wide collectors come back every interval: a connection unused for two is not needed
      idleMs: 2 * o.intervalMs,
      capacityEveryMs: o.intervalMs,
      registry: o.registry,
      logger: o.logger,
    });
    this.#unreachedGauge = new Gauge({
      name: 'pgmaintd_metrics_databases_unreached',
      help: 'Databases the last round of a per-database collector did not reach within its interval (they go first in the next round).',
      labelNames: ['collector'],
      registers: r,
    });
    this.#up = new Gauge({
      name: 'pg_up',
      help: 'Whether the last connection to the database succeeded (1) or not (0).',
      registers: r,
    });
    this.#success = new Gauge({
      name: 'pg_scrape_collector_success',
      help: 'Whether the collector succeeded in its last poll.',
      labelNames: ['collector'],
      registers: r,
    });
    this.#duration = new Gauge({
      name: 'pg_scrape_collector_duration_seconds',
      help: 'Duration of the collector’s last poll.',
      labelNames: ['collector'],
      registers: r,
    });
    this.#lastSuccess = new Gauge({
      name: 'pgmaintd_collector_last_success_timestamp_seconds',
      help: 'When the collector last succeeded (Unix seconds).',
      labelNames: ['collector'],
      registers: r,
    });
    this.#lastError = new Gauge({
      name: 'pg_exporter_last_scrape_error',
      help: 'Whether the last poll of any collector resulted in an error (1 for error, 0 for success).',
      registers: r,
    });
    this.#lastScrape = new Gauge({
      name: 'pg_exporter_last_scrape_duration_seconds',
      help: 'Duration of the last poll of all collectors together (what one scrape of the reference exporter would cost).',
      registers: r,
    });
    this.#scrapes = new Counter({
      name: 'pg_exporter_scrapes_total',
      help: 'Total number of times PostgreSQL was polled for metrics (one per collector poll; a scrape of /metrics runs no query).',
      registers: r,
    });
    this.#up.set(0);
  }

  /** Every pool the poller holds now (for pgmaintd_db_pool_clients). */
  pools(): DbPool[] {
    return [this.pool, ...this.#dbPools.values()];
  }

  /** pg_up as it is now: whether the last connection attempt succeeded. */
  get up(): boolean {
    return this.#upNow === true;
  }

  /** Each collector's health as the poller last saw it (read from memory, for the status page). */
  collectorHealth(): CollectorHealth[] {
    return this.#o.collectors.map((c) => {
      const h = this.#health.get(c.name);
      const errors = [...this.#errors].filter(([k]) => k === c.name || k.startsWith(`${c.name}@`));
      return {
        collector: c.name,
        ok: h?.ok ?? null,
        lastSuccessAt: h?.success === undefined ? null : new Date(h.success).toISOString(),
        lastFailureAt: h?.failure === undefined ? null : new Date(h.failure).toISOString(),
        error: errors.length
          ? errors
              .map(([, e]) => e)
              .join('; ')
              .slice(0, ERROR_TEXT_MAX)
          : null,
        durationSeconds: this.#lastDuration.get(c.name) ?? null,
        intervalSeconds: this.intervalOf(c) / 1000,
      };
    });
  }

  /** How often `c` polls: METRICS_COLLECTOR_INTERVALS, else the collector's own, else METRICS_INTERVAL. */
  intervalOf(c: Collector): number {
    return this.#o.intervals?.[c.name] || c.intervalMs || this.#o.intervalMs;
  }

  protected async onStart(): Promise<void> {
    for (const c of this.#o.collectors) this.#schedule(c, 0);
  }

  protected async onStop(): Promise<void> {
    clearTimeout(this.#earlyTimer);
    this.#earlyTimer = undefined;
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
    this.#setUp(ok);
  }

  /**
   * pg_up: whether the last connection attempt (a poll's or the readiness probe's) succeeded. On a
   * change, whichever attempt saw it first, the collectors poll early: when the database went away,
   * so their series are dropped now rather than served until their next poll; when it is back, the
   * ones that failed, so they recover now. Near a connection limit some attempts succeed and others
   * are refused, so pg_up can flip at every attempt: the early polls come in at most one round per
   * EARLY_POLL_GAP_MS, for the state as it is then, or they would add to the connections the server
   * is short of.
   */
  #setUp(ok: boolean) {
    const wasUp = this.#upNow;
    this.#upNow = ok;
    this.#up.set(ok ? 1 : 0);
    if (ok === wasUp || wasUp === undefined || !this.running || this.#earlyTimer !== undefined) return;
    const wait = this.#earlyAt + EARLY_POLL_GAP_MS - Date.now();
    if (wait <= 0) this.#pollEarly();
    else {
      this.#earlyTimer = setTimeout(() => {
        this.#earlyTimer = undefined;
        this.#pollEarly();
      }, wait);
      this.#earlyTimer.unref(); // stop() clears it; it alone keeps nothing alive
    }
  }

  #pollEarly() {
    if (!this.running) return;
    this.#earlyAt = Date.now();
    const ok = this.#upNow === true;
    for (const c of this.#o.collectors) {
      // one that polls this often anyway would gain nothing
      if (this.intervalOf(c) <= EARLY_POLL_GAP_MS) continue;
      const failing = [...this.#failing].some((k) => k === c.name || k.startsWith(`${c.name}@`));
      if ((!ok || failing) && this.#timers.has(c.name)) {
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
    this.#scrapes.inc();
    try {
      const ok = c.scope === 'database' ? await this.#runPerDatabase(c) : await this.#attempt(c, this.#main);
      this.#success.set({ collector: c.name }, ok ? 1 : 0);
      if (ok) this.#lastSuccess.set({ collector: c.name }, Date.now() / 1000);
      const h = this.#health.get(c.name) ?? { ok };
      h.ok = ok;
      if (ok) h.success = Date.now();
      else h.failure = Date.now();
      this.#health.set(c.name, h);
    } finally {
      const seconds = (performance.now() - t0) / 1000;
      this.#duration.set({ collector: c.name }, seconds);
      this.#lastDuration.set(c.name, seconds);
      this.#lastError.set(this.#failing.size > 0 ? 1 : 0);
      this.#lastScrape.set([...this.#lastDuration.values()].reduce((a, b) => a + b, 0));
    }
  }

  /**
   * One round of a per-database collector: each database once, as many at a time as the budget has
   * connections, each on a connection of its own closed after its poll. A slow database holds one
   * connection while the others go on; a round that outlasts its interval starts no more databases,
   * and those it did not reach go first in the next round, so none waits behind the others for good.
   * The collector succeeds when it succeeded in every database it reached; a database that failed has
   * its series dropped and is tried again next round.
   */
  async #runPerDatabase(c: Collector): Promise<boolean> {
    const deadline = performance.now() + this.intervalOf(c);
    let databases: readonly string[];
    try {
      databases = await this.#databases();
      this.#succeeded(c.name, { collector: c.name });
    } catch (err) {
      c.clear();
      this.#failed(c.name, err, { collector: c.name }, 'cannot list the databases to poll; series dropped');
      return false;
    }
    const listed = new Set(databases);
    const behind = (this.#unreached.get(c.name) ?? []).filter((d) => listed.has(d));
    const due = new Set(behind);
    const order = [...behind, ...databases.filter((d) => !due.has(d))];
    let next = 0;
    let ok = true;
    const worker = async () => {
      while (next < order.length && !this.stopping && performance.now() < deadline) {
        const database = order[next++]!;
        ok = (await this.#attempt(c, database)) && ok;
      }
    };
    // the budget decides how many run at once; each worker queues again after each database
    await Promise.all(Array.from({ length: Math.min(this.#budget.max, order.length) }, worker));
    const unreached = this.stopping ? [] : order.slice(next);
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
          budget: this.#budget.limit,
        },
        'a round of a per-database collector did not reach every database within its interval; those go first next round (raise METRICS_MAX_CONNECTIONS or the interval)',
      );
    } else if (unreached.length === 0 && this.#behind.delete(c.name))
      this.#log.info({ collector: c.name }, 'per-database collector reaches every database again');
    return ok;
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
      this.#succeeded(key, fields);
      return true;
    } catch (err) {
      failed = true;
      c.clear(perDatabase ? database : undefined);
      if (perDatabase && this.#o.databases === '*' && classify(err).code === '3D000') {
        // dropped since it was discovered: gone, not failing
        this.#forget([database]);
        this.#known = this.#known.filter((d) => d !== database);
        return true;
      }
      this.#failed(key, err, fields, 'collector failed; its series are dropped until it succeeds');
      return false;
    } finally {
      lease?.release(failed); // a connection that failed a poll is closed, not reused
    }
  }

  #succeeded(key: string, fields: Record<string, string>) {
    this.#errors.delete(key);
    if (this.#failing.delete(key)) this.#log.info(fields, 'collector recovered');
  }

  /** A failure is logged once, when it starts: an outage is not an error storm. */
  #failed(key: string, err: unknown, fields: Record<string, string>, message: string) {
    const { kind, code } = classify(err);
    if (kind === 'connection_lost' || kind === 'connection_refused') this.#serverVersionNum = undefined;
    const where = fields.database === undefined ? '' : ` (database ${JSON.stringify(fields.database)})`;
    this.#errors.set(key, `${kind}${code ? ` ${code}` : ''}${where}: ${oneLine(err)}`);
    if (this.#failing.has(key)) return;
    this.#failing.add(key);
    this.#log.warn({ ...fields, kind, code, err: { message: errorMessage(err) } }, message);
  }

  /** A connection out of the budget; one to the main database also says whether pg_up holds. */
  async #lease(database: string): Promise<Lease> {
    if (database !== this.#main) return this.#budget.acquire(database);
    try {
      const lease = await this.#budget.acquire(database);
      this.#setUp(true);
      return lease;
    } catch (err) {
      if (!this.stopping) this.#setUp(false);
      throw err;
    }
  }

  /** The databases the per-database collectors poll now; with '*', discovered on each round. */
  async #databases(): Promise<readonly string[]> {
    const wanted = this.#o.databases ?? [this.#main];
    if (wanted !== '*') {
      // the budget looks at the server's free slots on a connection to the main database: when
      // nothing else polls it, this round does
      if (this.#budget.capacityStale && !wanted.includes(this.#main))
        await this.#lease(this.#main).then(
          (l) => l.release(),
          () => undefined,
        );
      return wanted;
    }
    const lease = await this.#lease(this.#main);
    let failed = false;
    try {
      const found = (await lease.client.query<{ datname: string }>(DISCOVER_SQL)).rows.map((r) => r.datname);
      this.#forget(this.#known.filter((d) => !found.includes(d)));
      this.#known = found;
      return found;
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      lease.release(failed);
    }
  }

  /** A database that is gone: its series and its pool go too. */
  #forget(gone: string[]) {
    for (const database of gone) {
      for (const c of this.#o.collectors) if (c.scope === 'database') c.clear(database);
      for (const key of [...this.#failing]) if (key.endsWith(`@${database}`)) this.#failing.delete(key);
      for (const key of [...this.#errors.keys()]) if (key.endsWith(`@${database}`)) this.#errors.delete(key);
      const pool = this.#dbPools.get(database);
      this.#dbPools.delete(database);
      void pool?.stop();
      this.#log.info({ database }, 'database no longer listed; its per-database series are dropped');
    }
  }

  #poolOf(database: string): DbPool {
    return database === this.#main ? this.pool : this.#poolFor(database);
  }

  #poolFor(database: string): DbPool {
    let pool = this.#dbPools.get(database);
    if (!pool) {
      pool = this.#newPool(`metrics:${database}`, database);
      this.#dbPools.set(database, pool);
    }
    return pool;
  }

  #newPool(name: string, database?: string): DbPool {
    const o = this.#o;
    return new DbPool(o.db, {
      name,
      ...(database ? { database } : {}),
      logger: o.logger,
      // the budget bounds the connections of every pool together
      max: o.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      min: 0,
      acquireTimeoutMs: o.statementTimeoutMs,
      statementTimeoutMs: o.statementTimeoutMs,
      lockTimeoutMs: o.lockTimeoutMs,
      queryTimeoutMs: o.statementTimeoutMs + 1000,
      applicationName: 'pg-maintd',
    });
  }
}

/** An error as one line of bounded length (a server's message may span lines). */
function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, ERROR_TEXT_MAX);
}
