/**
 * What the poller keeps of each collector's polls, so that a broken query is visible and not silent:
 * the reference exporter's pg_scrape_collector_* and pg_exporter_* families, the errors the status
 * page shows, and which collectors (or collector@database) are failing now. A failure is logged once,
 * when it starts, and its recovery once: an outage is not an error storm.
 *
 * The poller decides what to poll and when (poller.ts); this only books the outcomes.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { classify, type Classified } from '../db/sqlstate.js';
import type { Logger } from '../log/logger.js';
import type { Collector } from './collector.js';
import { errorMessage } from '../core/errors.js';

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

/** An error's message as one short line: a status page or a terminal shows it, never a stack. */
const ERROR_TEXT_MAX = 300;

export class CollectorHealthBook {
  readonly #log: Logger;
  /** Keys (collector, or collector@database) failing now: each failure is logged once, not per poll. */
  readonly #failing = new Set<string>();
  readonly #lastDuration = new Map<string, number>();
  /** Per collector: the last poll's outcome and when each kind last happened, for the status page. */
  readonly #health = new Map<string, { ok: boolean; success?: number; failure?: number }>();
  /** Per failing key: why, kept while it fails (what the log said once). */
  readonly #errors = new Map<string, string>();
  readonly #success: Gauge<'collector'>;
  readonly #duration: Gauge<'collector'>;
  readonly #lastSuccess: Gauge<'collector'>;
  readonly #lastError: Gauge;
  readonly #lastScrape: Gauge;
  readonly #scrapes: Counter;

  /** `logger` is the poller's: a failure is logged as the poller's, with its fields. */
  constructor(registry: Registry, logger: Logger) {
    this.#log = logger;
    const r = [registry];
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
  }

  /** A poll of a collector starts (pg_exporter_scrapes_total). */
  pollStarted(): void {
    this.#scrapes.inc();
  }

  /** How a poll of `collector` ended: in every database it reached (`ok`), or not. */
  pollEnded(collector: string, ok: boolean): void {
    this.#success.set({ collector }, ok ? 1 : 0);
    if (ok) this.#lastSuccess.set({ collector }, Date.now() / 1000);
    const h = this.#health.get(collector) ?? { ok };
    h.ok = ok;
    if (ok) h.success = Date.now();
    else h.failure = Date.now();
    this.#health.set(collector, h);
  }

  /** How long a poll of `collector` took, whatever its outcome. */
  pollTook(collector: string, seconds: number): void {
    this.#duration.set({ collector }, seconds);
    this.#lastDuration.set(collector, seconds);
    this.#lastError.set(this.#failing.size > 0 ? 1 : 0);
    this.#lastScrape.set([...this.#lastDuration.values()].reduce((a, b) => a + b, 0));
  }

  /** `key` (collector, or collector@database) succeeded: a failure it had is over, said once. */
  succeeded(key: string, fields: Record<string, string>): void {
    this.#errors.delete(key);
    if (this.#failing.delete(key)) this.#log.info(fields, 'collector recovered');
  }

  /** `key` failed: why is kept for the status page, and logged when the failure starts. */
  failed(key: string, err: unknown, fields: Record<string, string>, message: string): Classified {
    const classified = classify(err);
    const { kind, code } = classified;
    const where = fields.database === undefined ? '' : ` (database ${JSON.stringify(fields.database)})`;
    this.#errors.set(key, `${kind}${code ? ` ${code}` : ''}${where}: ${oneLine(err)}`);
    if (this.#failing.has(key)) return classified;
    this.#failing.add(key);
    this.#log.warn({ ...fields, kind, code, err: { message: errorMessage(err) } }, message);
    return classified;
  }

  /** Whether `collector` fails now, anywhere (in any database, for a per-database one). */
  isFailing(collector: string): boolean {
    return [...this.#failing].some((k) => ofCollector(k, collector));
  }

  /** A database that is gone: its failures are no failures any more. */
  forgetDatabase(database: string): void {
    // by the whole name after the collector's: dropping "a" must not forget the failures of "b@a"
    for (const key of [...this.#failing]) if (databaseOf(key) === database) this.#failing.delete(key);
    for (const key of [...this.#errors.keys()]) if (databaseOf(key) === database) this.#errors.delete(key);
  }

  /** Each collector's health as last booked (read from memory, for the status page). */
  report(collectors: readonly Collector[], intervalOf: (c: Collector) => number): CollectorHealth[] {
    return collectors.map((c) => {
      const h = this.#health.get(c.name);
      const errors = [...this.#errors].filter(([k]) => ofCollector(k, c.name));
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
        intervalSeconds: intervalOf(c) / 1000,
      };
    });
  }
}

/** Whether `key` is `collector`'s: the collector's own, or one of its databases'. */
function ofCollector(key: string, collector: string): boolean {
  return key === collector || key.startsWith(`${collector}@`);
}

/** The database of a per-database key (collector names hold no '@'; database names may). */
function databaseOf(key: string): string | undefined {
  const at = key.indexOf('@');
  return at < 0 ? undefined : key.slice(at + 1);
}

/** An error as one line of bounded length (a server's message may span lines). */
function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, ERROR_TEXT_MAX);
}
