/**
 * A metric family whose samples are cached: a collector replaces them after each poll, and a scrape
 * formats the cache. A scrape never touches the database, and a failed collector's series are
 * dropped, not served stale (prom-client's own unlabelled gauges would keep serving a 0).
 * Counters read from the database are absolute values, exported as they are.
 */
import type { Metric, Registry } from 'prom-client';

export interface Sample<L extends string = string> {
  labels: Partial<Record<L, string | number>>;
  value: number;
}

export class CachedFamily<L extends string = string> {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter' | 'untyped';
  readonly aggregator = 'sum' as const;
  #samples: Sample<L>[] = [];
  /** Grows on every change: the exposition re-renders a family only when this moved. */
  #version = 0;
  /** The family rendered in the text format, for the version it was rendered at. */
  rendered: { version: number; text: string } | undefined;

  constructor(
    registry: Registry,
    opts: { name: string; help: string; type: 'gauge' | 'counter' | 'untyped'; labelNames?: readonly L[] },
  ) {
    this.name = opts.name;
    this.help = opts.help;
    this.type = opts.type;
    registry.registerMetric(this as unknown as Metric);
  }

  /** What the registry formats at scrape time (prom-client's metric interface: name, help, type, values). */
  async get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: Sample<L>[];
  }> {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: this.#samples.filter(
        (s) => Number.isFinite(s.value) && (this.type !== 'counter' || s.value >= 0),
      ),
    };
  }

  replace(samples: Sample<L>[]): void {
    this.#samples = samples;
    this.#version++;
  }

  clear(): void {
    if (this.#samples.length === 0) return;
    this.#samples = [];
    this.#version++;
  }

  get version(): number {
    return this.#version;
  }

  reset(): void {
    this.clear();
  }

  get samples(): readonly Sample<L>[] {
    return this.#samples;
  }
}
