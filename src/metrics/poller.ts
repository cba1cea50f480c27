/**
 * The poller runs each collector on its own interval against a small pool of its own (statement and
 * lock timeouts set, application_name pg-maintd) and caches the results; /metrics serves the cache.
 * A scrape never touches the database, so it costs the same whether the database is idle,
 * overloaded or down. pg_up is 1 only when the last connection attempt succeeded.
 */
import type pg from 'pg';
import { Gauge, type Registry } from 'prom-client';
import { DbPool, type PoolSettings } from '../db/pool.js';
import { classify } from '../db/sqlstate.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import type { Collector } from './collector.js';

export interface PollerOptions {
  db: PoolSettings;
  registry: Registry;
  logger: Logger;
  collectors: Collector[];
  intervalMs: number;
  statementTimeoutMs: number;
  lockTimeoutMs: number;
}

export class Poller extends Service {
  readonly name = 'metrics-poller';
  readonly pool: DbPool;
  readonly #o: PollerOptions;
  readonly #log: Logger;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #failing = new Set<string>();
  readonly #lastDuration = new Map<string, number>();
  #serverVersionNum: number | undefined;
  readonly #up: Gauge;
  readonly #success: Gauge<'collector'>;
  readonly #duration: Gauge<'collector'>;
  readonly #lastSuccess: Gauge<'collector'>;
  readonly #lastError: Gauge;
  readonly #lastScrape: Gauge;

  constructor(o: PollerOptions) {
    super();
    this.#o = o;
    this.#log = o.logger.child({ component: 'metrics' });
    this.pool = new DbPool(o.db, {
      name: 'metrics',
      logger: o.logger,
      max: 2,
      min: 0,
      acquireTimeoutMs: o.statementTimeoutMs,
      statementTimeoutMs: o.statementTimeoutMs,
      lockTimeoutMs: o.lockTimeoutMs,
      queryTimeoutMs: o.statementTimeoutMs + 1000,
      applicationName: 'pg-maintd',
    });
    const r = [o.registry];
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
    this.#up.set(0);
  }

  protected async onStart(): Promise<void> {
    for (const c of this.#o.collectors) this.#schedule(c, 0);
  }

  protected async onStop(): Promise<void> {
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    await Promise.allSettled([...this.#inFlight]);
    await this.pool.stop();
  }

  /** Polls every collector once now (tests, and the first round at start). */
  async pollAll(): Promise<void> {
    await Promise.all(this.#o.collectors.map((c) => this.#run(c)));
  }

  #schedule(c: Collector, delayMs: number) {
    if (this.stopping) return;
    const timer = setTimeout(() => {
      const run = this.#run(c).finally(() => {
        this.#inFlight.delete(run);
        this.#schedule(c, c.intervalMs ?? this.#o.intervalMs);
      });
      this.#inFlight.add(run);
    }, delayMs);
    timer.unref();
    this.#timers.set(c.name, timer);
  }

  async #run(c: Collector): Promise<void> {
    const t0 = performance.now();
    let client: pg.PoolClient | undefined;
    let failed = false;
    try {
      try {
        client = await this.pool.connect();
        this.#up.set(1);
      } catch (err) {
        this.#up.set(0);
        throw err;
      }
      this.#serverVersionNum ??= Number(
        (await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v,
      );
      await c.collect({ client, serverVersionNum: this.#serverVersionNum, logger: this.#log });
      this.#success.set({ collector: c.name }, 1);
      this.#lastSuccess.set({ collector: c.name }, Date.now() / 1000);
      if (this.#failing.delete(c.name)) this.#log.info({ collector: c.name }, 'collector recovered');
    } catch (err) {
      failed = true;
      c.clear();
      this.#success.set({ collector: c.name }, 0);
      const { kind, code } = classify(err);
      if (kind === 'connection_lost' || kind === 'connection_refused') this.#serverVersionNum = undefined;
      if (!this.#failing.has(c.name)) {
        // once per failure, not once per poll: an outage is not an error storm
        this.#failing.add(c.name);
        this.#log.warn(
          { collector: c.name, kind, code, err: { message: (err as Error).message } },
          'collector failed; its series are dropped until it succeeds',
        );
      }
    } finally {
      client?.release(failed); // a connection that failed a poll is discarded, not reused
      const seconds = (performance.now() - t0) / 1000;
      this.#duration.set({ collector: c.name }, seconds);
      this.#lastDuration.set(c.name, seconds);
      this.#lastError.set(this.#failing.size > 0 ? 1 : 0);
      this.#lastScrape.set([...this.#lastDuration.values()].reduce((a, b) => a + b, 0));
    }
  }
}
