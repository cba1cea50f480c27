/**
 * Every connection of the metrics poller comes out of one budget (METRICS_MAX_CONNECTIONS), whatever
 * database it is for: with METRICS_DATABASES='*' on a server of sixty databases, a pool per database
 * would hold sixty connections for as long as the daemon runs.
 *
 * The budget counts connections open (in use, idle, opening and closing alike), not connections in
 * use, because the server counts them so. Waiters for the main database (the server-wide collectors,
 * and with them pg_up) go ahead of the per-database rounds' and the others are served first come,
 * first served: several per-database collectors, each with as many workers as the budget has
 * connections, can queue a dozen polls of slow catalogs, and pg_up must not wait behind them. Only connections to the main database (DATABASE_URL's: the server-wide collectors poll
 * it every interval) are kept idle for reuse, and only while the budget has room; a connection to any
 * other database is closed once its poll is done, and an idle one is closed to make room for one
 * somebody waits for. A slot is given back once the server has let the connection go (its backend
 * gone from pg_stat_activity), so the server never sees more than the budget.
 *
 * Near the server's connection limit the budget shrinks (CapacityLimit, in server-capacity.ts); until
 * the first look at the server, it is one connection.
 */
import type pg from 'pg';
import { Gauge, type Registry } from 'prom-client';
import { classify } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import { CapacityLimit } from './server-capacity.js';

/** A connection out of the budget; release() gives it back, exactly once. */
export interface Lease {
  readonly client: pg.PoolClient;
  /** `discard`: the connection failed a poll; it is closed, never reused. */
  release(discard?: boolean): void;
}

export interface BudgetOptions {
  /** METRICS_MAX_CONNECTIONS. */
  max: number;
  /** The database whose idle connections are kept for reuse. */
  main: string;
  /** Opens a new connection to `database` (its slot is already counted). */
  open(database: string): Promise<pg.PoolClient>;
  /**
   * Where a new connection to `database` would go now (DATABASE_URL_FILE can move it, at a
   * failover): an idle connection opened for another target is closed, never reused.
   */
  targetOf(database: string): string;
  /** An idle connection is closed after this long unused. */
  idleMs: number;
  /** The server's free slots are read again at most this often (on a main-database connection). */
  capacityEveryMs: number;
  registry: Registry;
  logger: Logger;
}

interface Waiter {
  database: string;
  resolve(lease: Lease): void;
  reject(err: unknown): void;
}

interface Idle {
  client: pg.PoolClient;
  timer: NodeJS.Timeout;
  onEnd: () => void;
}

/** A closing connection whose server does not answer gives its slot back after this long anyway. */
const CLOSE_WAIT_MS = 5000;

export class ConnectionBudget {
  readonly max: number;
  readonly #o: BudgetOptions;
  readonly #log: Logger;
  /** The connections the poller may hold now. */
  readonly #capacity: CapacityLimit;
  /** Slots taken: connections opening, in use, idle or closing. */
  #open = 0;
  #inUse = 0;
  readonly #idle: Idle[] = [];
  readonly #waiters: Waiter[] = [];
  readonly #closing = new Set<Promise<void>>();
  /** What each connection was opened for: its database, and the target it went to then. */
  readonly #opened = new WeakMap<pg.PoolClient, { database: string; target: string }>();
  #closed = false;

  constructor(o: BudgetOptions) {
    this.max = o.max;
    this.#o = o;
    this.#log = o.logger.child({ component: 'metrics' });
    this.#capacity = new CapacityLimit({
      max: o.max,
      everyMs: o.capacityEveryMs,
      logger: this.#log,
      own: () => this.#open,
      changed: () => this.#pump(),
    });
    const r = [o.registry];
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- prom-client binds `this` in collect()
    const self = this;
    new Gauge({
      name: 'pgmaintd_metrics_connections_budget',
      help: 'Connections the metrics poller may hold now: METRICS_MAX_CONNECTIONS, or fewer while the server is near its connection limit.',
      registers: r,
      collect() {
        this.set(self.#capacity.value);
      },
    });
    new Gauge({
      name: 'pgmaintd_metrics_connections',
      help: 'Connections of the metrics poller, by state (in_use, idle; open counts opening and closing ones too).',
      labelNames: ['state'],
      registers: r,
      collect() {
        this.set({ state: 'open' }, self.#open);
        this.set({ state: 'in_use' }, self.#inUse);
        this.set({ state: 'idle' }, self.#idle.length);
      },
    });
  }

  /** The connections the poller may hold now (METRICS_MAX_CONNECTIONS, or fewer near the limit). */
  get limit(): number {
    return this.#capacity.value;
  }

  /** Connections open now (opening, in use, idle or closing). */
  get open(): number {
    return this.#open;
  }

  /** A connection to `database` once the budget has room; the main database's callers go first. */
  acquire(database: string): Promise<Lease> {
    if (this.#closed) return Promise.reject(new Error('the metrics poller is stopping'));
    return new Promise<Lease>((resolve, reject) => {
      const waiter = { database, resolve, reject };
      // behind the main database's earlier waiters, ahead of every other database's
      const at = database === this.#o.main ? this.#waiters.findIndex((w) => w.database !== this.#o.main) : -1;
      if (at >= 0) this.#waiters.splice(at, 0, waiter);
      else this.#waiters.push(waiter);
      this.#pump();
    });
  }

  /** Whether the server's free slots are due for another look. */
  get capacityStale(): boolean {
    return this.#capacity.stale;
  }

  /** Closes the idle connections, refuses the waiters, and waits for the connections closing. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w.reject(new Error('the metrics poller is stopping'));
    for (const idle of this.#idle.splice(0)) this.#close(idle.client, idle);
    while (this.#closing.size > 0) await Promise.allSettled([...this.#closing]);
  }

  /** Serves waiters in order while the budget has room (or an idle connection to give up). */
  #pump() {
    this.#trimIdle();
    while (this.#waiters.length > 0) {
      const w = this.#waiters[0]!;
      this.#dropMoved(w.database);
      const reuse = this.#idle.findIndex((i) => this.#databaseOf(i.client) === w.database);
      if (reuse >= 0) {
        const [idle] = this.#idle.splice(reuse, 1);
        this.#unidle(idle!);
        this.#waiters.shift();
        this.#inUse++;
        void this.#handOut(w, idle!.client);
        continue;
      }
      if (this.#open >= this.#capacity.value) {
        // room for the first waiter: a connection closing gives its slot back soon (then #pump runs
        // again); with none closing that would make room, an idle one is closed
        if (this.#live >= this.#capacity.value) {
          const idle = this.#idle.shift();
          if (idle) this.#close(idle.client, idle);
        }
        return;
      }
      this.#waiters.shift();
      this.#open++;
      this.#inUse++;
      void this.#openFor(w);
    }
  }

  async #openFor(w: Waiter) {
    let client: pg.PoolClient;
    try {
      client = await this.#o.open(w.database);
    } catch (err) {
      this.#open--;
      this.#inUse--;
      if (classify(err).kind === 'too_many_connections') this.#capacity.refused(err);
      w.reject(err);
      this.#pump();
      return;
    }
    this.#opened.set(client, { database: w.database, target: this.#o.targetOf(w.database) });
    await this.#handOut(w, client);
  }

  /** Gives `client` to `w`; on the main database, first reads the server's free slots when due. */
  async #handOut(w: Waiter, client: pg.PoolClient) {
    if (w.database === this.#o.main && this.capacityStale) await this.#capacity.read(client);
    let released = false;
    w.resolve({
      client,
      release: (discard = false) => {
        if (released) return;
        released = true;
        this.#inUse--;
        this.#giveBack(client, discard);
      },
    });
  }

  #giveBack(client: pg.PoolClient, discard: boolean) {
    const next = this.#waiters[0];
    const keep =
      !discard &&
      !this.#closed &&
      this.#databaseOf(client) === this.#o.main &&
      // DATABASE_URL_FILE moved the main database meanwhile: the next poll goes to the new target
      this.#opened.get(client)?.target === this.#o.targetOf(this.#o.main) &&
      this.#live <= this.#capacity.value &&
      (next === undefined || next.database === this.#o.main);
    if (!keep) this.#close(client);
    else if (next) {
      // the next waiter wants this very database: hand the connection over as it is
      this.#waiters.shift();
      this.#inUse++;
      void this.#handOut(next, client);
    } else this.#toIdle(client);
    this.#pump();
  }

  /** Slots that stay taken: those closing give theirs back on their own. */
  get #live(): number {
    return this.#open - this.#closing.size;
  }

  #toIdle(client: pg.PoolClient) {
    // a connection that dies while idle (server restart) is let go at once, not handed out
    const onEnd = () => {
      const i = this.#idle.findIndex((x) => x.client === client);
      if (i < 0) return;
      const [idle] = this.#idle.splice(i, 1);
      this.#close(client, idle);
      this.#pump();
    };
    const timer = setTimeout(onEnd, this.#o.idleMs);
    timer.unref();
    client.once('end', onEnd);
    this.#idle.push({ client, timer, onEnd });
  }

  #unidle(idle: Idle) {
    clearTimeout(idle.timer);
    idle.client.off('end', idle.onEnd);
  }

  /** Idle connections beyond the budget (it shrank) are closed now. */
  #trimIdle() {
    while (this.#idle.length > 0 && this.#live > this.#capacity.value) {
      const idle = this.#idle.shift()!;
      this.#close(idle.client, idle);
    }
  }

  /** The slot stays taken until the server has let the connection go (or CLOSE_WAIT_MS passed). */
  #close(client: pg.PoolClient, idle?: Idle) {
    if (idle) this.#unidle(idle);
    const done = (async () => {
      try {
        client.release(true);
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          client.end().catch(() => undefined),
          new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS))),
        ]);
        clearTimeout(timer);
      } catch {
        // released twice by a failed client: it is gone either way
      }
    })();
    this.#closing.add(done);
    void done.finally(() => {
      this.#closing.delete(done);
      this.#open--;
      if (!this.#closed) this.#pump();
    });
  }

  /** Idle connections to `database` that a new one would no longer reach (the URL file moved it). */
  #dropMoved(database: string) {
    const moved = this.#idle.filter(
      (i) =>
        this.#databaseOf(i.client) === database &&
        this.#opened.get(i.client)?.target !== this.#o.targetOf(database),
    );
    for (const idle of moved) {
      this.#idle.splice(this.#idle.indexOf(idle), 1);
      this.#close(idle.client, idle);
    }
  }

  #databaseOf(client: pg.PoolClient): string | undefined {
    return this.#opened.get(client)?.database;
  }
}
