/**
 * Renders /metrics. The polled families (CachedFamily) change only when a collector polls, every 15 s
 * or so, so their text is rendered once per change, right after the poll, and kept as one ready
 * buffer; empty families (a failed collector's) are left out. The process and
 * Node runtime metrics (process_*, nodejs_*) are the costliest to collect and are re-collected at most
 * once per `runtimeMaxAgeMs` (1 s). Only pg-maintd's own scrape-time metrics (pools, jobs, backups) are
 * rendered on every request. A scrape therefore costs about the same with 50 series or 5,000, and
 * never touches the database.
 */
import type { Metric, Registry } from 'prom-client';
import { CachedFamily, type FormattingRegistry } from './family.js';

const RUNTIME = /^(process|nodejs)_/;

export class Exposition {
  #stamp = -1;
  #polled: Buffer = Buffer.alloc(0);
  #runtime: Buffer = Buffer.alloc(0);
  #runtimeAt = -Infinity;
  #live = '';
  /** The last body: served again, not rebuilt, while no part of it changed (no 150 kB copy per scrape). */
  #body: Buffer | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly opts: { runtimeMaxAgeMs?: number } = {},
  ) {}

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The whole exposition, in prom-client's text format (the families registry.metrics() gives). */
  async render(): Promise<Buffer> {
    const format = this.registry as unknown as FormattingRegistry;
    const families: CachedFamily[] = [];
    const runtime: Metric[] = [];
    const live: Metric[] = [];
    for (const m of this.registry.getMetricsAsArray() as unknown as Metric[]) {
      if (m instanceof CachedFamily) families.push(m);
      else if (RUNTIME.test((m as unknown as { name: string }).name)) runtime.push(m);
      else live.push(m);
    }
    // versions only grow, so their sum moves whenever any family changed (or one was added)
    let stamp = families.length;
    for (const f of families) stamp += f.version;
    if (stamp !== this.#stamp) {
      const texts: string[] = [];
      for (const f of families) {
        const text = await f.text(); // rendered after its poll already, as a rule
        if (text) texts.push(text);
      }
      this.#polled = Buffer.from(joined(texts));
      this.#stamp = stamp;
      this.#body = undefined;
    }
    const now = performance.now();
    if (now - this.#runtimeAt >= (this.opts.runtimeMaxAgeMs ?? 1000)) {
      this.#runtime = Buffer.from(
        joined(await Promise.all(runtime.map((m) => format.getMetricsAsString(m)))),
      );
      this.#runtimeAt = now;
      this.#body = undefined;
    }
    const liveText = joined(await Promise.all(live.map((m) => format.getMetricsAsString(m))));
    if (this.#body === undefined || liveText !== this.#live) {
      const body = Buffer.concat([this.#polled, this.#runtime, Buffer.from(liveText)]);
      this.#body = body.length ? body.subarray(0, body.length - 1) : Buffer.from('\n'); // one newline at the end
      this.#live = liveText;
    }
    return this.#body;
  }
}

/** Families joined as prom-client joins them: a blank line between two (and after the last). */
function joined(texts: string[]): string {
  return texts.length ? `${texts.join('\n\n')}\n\n` : '';
}
