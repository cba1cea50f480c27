/**
 * A metric family whose samples are cached: a collector replaces them after each poll, and a scrape
 * formats the cache. A scrape never touches the database, and a failed collector's series are
 * dropped, not served stale (prom-client's own unlabelled gauges would keep serving a 0).
 * Counters read from the database are absolute values, exported as they are.
 */
import type { Metric, Registry } from 'prom-client';

/** Changes of every CachedFamily in this process: a scrape that sees the same count skips them all. */
let changes = 0;
export const familyChanges = (): number => changes;

export interface Sample<L extends string = string> {
  labels: Partial<Record<L, string | number>>;
  value: number;
}

export class CachedFamily<L extends string = string> {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter' | 'untyped';
  /** The label names its samples carry (what the reference-parity test compares). */
  readonly labelNames: readonly L[];
  readonly aggregator = 'sum' as const;
  #samples: Sample<L>[] = [];
  /** Grows on every change: the exposition re-renders a family only when this moved. */
  #version = 0;
  /** The family rendered in the text format, for the version it was rendered at ('' when empty). */
  rendered: { version: number; text: string } | undefined;
  readonly #registry: Registry;

  constructor(
    registry: Registry,
    opts: { name: string; help: string; type: 'gauge' | 'counter' | 'untyped'; labelNames?: readonly L[] },
  ) {
    this.name = opts.name;
    this.help = opts.help;
    this.type = opts.type;
    this.labelNames = opts.labelNames ?? [];
    this.#registry = registry;
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

  /** New samples from a poll; a family whose samples did not change keeps its rendered text. */
  replace(samples: Sample<L>[]): void {
    if (sameSamples(this.#samples, samples)) return;
    this.#samples = samples;
    this.#changed();
  }

  clear(): void {
    if (this.#samples.length === 0) return;
    this.#samples = [];
    this.#changed();
  }

  /** The text of the current samples, rendered now if a change has not been rendered yet. */
  async text(): Promise<string> {
    const version = this.#version;
    if (this.rendered?.version !== version) {
      const text =
        this.#samples.length === 0
          ? '' // an empty family is left out of the exposition, HELP and TYPE too
          : await (this.#registry as unknown as FormattingRegistry).getMetricsAsString(
              this as unknown as Metric,
            );
      this.rendered = { version, text };
    }
    return this.rendered!.text;
  }

  #changed(): void {
    this.#version++;
    changes++;
    renderSoon(this); // right after the poll, so a scrape finds it rendered
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

/** prom-client formats one metric with this (public in its JavaScript, absent from its typings). */
export interface FormattingRegistry {
  getMetricsAsString(metric: Metric): Promise<string>;
}

function sameSamples<L extends string>(a: readonly Sample<L>[], b: readonly Sample<L>[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!Object.is(x.value, y.value)) return false;
    const kx = Object.keys(x.labels) as L[];
    if (kx.length !== Object.keys(y.labels).length) return false;
    for (const k of kx) if (x.labels[k] !== y.labels[k]) return false;
  }
  return true;
}

/**
 * Families changed by a poll wait here to be rendered, a slice of about a millisecond at a time, so
 * that rendering thousands of series after a poll never holds a scrape up for long.
 */
const renderQueue = new Set<CachedFamily<string>>();
let draining = false;

function renderSoon(f: CachedFamily<string>): void {
  renderQueue.add(f);
  if (draining) return;
  draining = true;
  setImmediate(() => void drainRenderQueue());
}

async function drainRenderQueue(): Promise<void> {
  const until = performance.now() + 1;
  for (const f of renderQueue) {
    renderQueue.delete(f);
    await f.text();
    if (performance.now() > until) break;
  }
  if (renderQueue.size > 0) setImmediate(() => void drainRenderQueue());
  else draining = false;
}
