/**
 * Renders /metrics. The polled families (CachedFamily) change only when a collector polls, every 15 s
 * or so, so their text is rendered once per change, right after the poll, and kept as one ready
 * buffer; empty families (a failed collector's) are left out. The process and Node runtime metrics
 * (process_*, nodejs_*) are the costliest to collect and are re-collected at most once per
 * `runtimeMaxAgeMs` (1 s). pg-maintd's own metrics (pools, jobs, backups) are checked on every
 * request (requests that arrive in one turn of the event loop share the check), and each is formatted
 * again only when one of its values changed; those whose values are computed when read (a collect():
 * pool sizes, the connection budget, next runs) are computed at most once per `collectMaxAgeMs`
 * (250 ms), since computing them was most of what a scrape cost beyond sending the body, and a
 * scraper that comes every few seconds sees them no older than that. A scrape therefore costs about the same with
 * 50 series or 5,000, and never touches the database.
 *
 * What a scrape gets is a Snapshot: the body, and its gzip made at most once per snapshot (on the
 * first request that asks for it) from the polled part compressed once per poll plus the small tail.
 * A snapshot is kept, and served again without a copy, until some part of it changes.
 */
import { Counter, Gauge, type Metric, type Registry } from 'prom-client';
import { CachedFamily, familyChanges, type FormattingRegistry } from './family.js';
import { GzipPart, gzipParts } from './gzip-parts.js';
import { CountingRegistry } from './registry.js';

const RUNTIME = /^(process|nodejs)_/;

/** One version of the whole exposition. */
export class Snapshot {
  /** The text exposition: one newline at the end. */
  readonly body: Buffer;
  #gzip: Promise<Buffer> | undefined;

  constructor(
    private readonly part: GzipPart,
    private readonly tail: Buffer,
  ) {
    this.body = tail.length ? Buffer.concat([part.text, tail]) : part.text;
  }

  /** The body gzipped; made once, on the first call, and shared by every request of this snapshot. */
  gzip(): Promise<Buffer> {
    if (this.#gzip) return this.#gzip;
    const gzip = (this.#gzip = gzipParts(this.part, this.tail));
    // a failure is not kept: the next request tries again
    gzip.catch(() => this.#gzip === gzip && (this.#gzip = undefined));
    return gzip;
  }
}

/** What a live metric looked like when it was last formatted: its values, copied. */
interface Seen {
  /** The value objects as read (prom-client keeps them until a set() replaces one), and copies. */
  read: readonly object[];
  values: { name: unknown; value: number; labels: Record<string, unknown> }[];
  text: string;
}

interface MetricData {
  name?: string;
  help?: string;
  type?: string;
  aggregator?: string;
  values?: { metricName?: unknown; value: number; labels?: Record<string, unknown> }[];
}

export class Exposition {
  #all: Metric[] = [];
  #changes: number | undefined;
  #families: CachedFamily[] = [];
  #runtime: Metric[] = [];
  #live: Metric[] = [];
  #stamp = -1;
  #familyChanges = -1;
  #polledText = '';
  #part = new GzipPart(Buffer.alloc(0));
  #runtimeText = '';
  #runtimeAt = -Infinity;
  #seen = new WeakMap<Metric, Seen>();
  #liveText = '';
  /** When the live metrics' collect() last ran. */
  #collectAt = -Infinity;
  /** The live metrics changed (one was added or removed): their text is joined again. */
  #liveSorted = true;
  #snapshot: Snapshot | undefined;
  /** The check in progress, or done in this turn of the event loop: requests that arrive together share it. */
  #current: Promise<Snapshot> | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly opts: { runtimeMaxAgeMs?: number; collectMaxAgeMs?: number } = {},
  ) {}

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The whole exposition, in prom-client's text format (the families registry.metrics() gives). */
  async render(): Promise<Buffer> {
    return (await this.snapshot()).body;
  }

  /**
   * The current snapshot: the last one again when nothing in it changed. Requests that arrive in the
   * same turn of the event loop (a batch of sockets that became readable together) share one check:
   * nothing else runs between them, so nothing could have changed.
   */
  snapshot(): Promise<Snapshot> {
    if (this.#current) return this.#current;
    const current = (this.#current = this.#check());
    const done = () => setImmediate(() => this.#current === current && (this.#current = undefined));
    current.then(done, done);
    return current;
  }

  async #check(): Promise<Snapshot> {
    const format = this.registry as unknown as FormattingRegistry;
    this.#sort();
    let changed = this.#snapshot === undefined;
    // versions only grow, so their sum moves whenever any family changed (or one was added); no
    // family anywhere changed since the last check: none of these did
    const moved = familyChanges();
    let stamp = this.#stamp;
    if (moved !== this.#familyChanges || stamp === -1) {
      stamp = this.#families.length;
      for (const f of this.#families) stamp += f.version;
    }
    if (stamp !== this.#stamp) {
      const texts: string[] = [];
      for (const f of this.#families) {
        const text = await f.text(); // rendered after its poll already, as a rule
        if (text) texts.push(text);
      }
      this.#polledText = joined(texts);
      this.#part = new GzipPart(Buffer.from(this.#polledText));
      this.#stamp = stamp;
      changed = true;
    }
    this.#familyChanges = moved;
    const now = performance.now();
    if (now - this.#runtimeAt >= (this.opts.runtimeMaxAgeMs ?? 1000)) {
      this.#runtimeText = joined(await Promise.all(this.#runtime.map((m) => format.getMetricsAsString(m))));
      this.#runtimeAt = now;
      changed = true;
    }
    if (await this.#readLive(format)) changed = true;
    if (changed) this.#snapshot = this.#build();
    return this.#snapshot!;
  }

  /** Splits the registry's metrics by how they are cached, again only when its metrics changed. */
  #sort(): void {
    const changes = this.registry instanceof CountingRegistry ? this.registry.changes : undefined;
    if (changes !== undefined && changes === this.#changes) return;
    this.#changes = changes;
    const all = this.registry.getMetricsAsArray() as unknown as Metric[];
    if (all.length === this.#all.length && all.every((m, i) => m === this.#all[i])) return;
    this.#all = all;
    this.#families = [];
    this.#runtime = [];
    this.#live = [];
    for (const m of all) {
      if (m instanceof CachedFamily) this.#families.push(m);
      else if (RUNTIME.test((m as unknown as { name: string }).name)) this.#runtime.push(m);
      else this.#live.push(m);
    }
    this.#stamp = -1; // a family may have been added or removed whatever the versions sum to
    this.#runtimeAt = -Infinity;
    this.#liveSorted = true;
  }

  /**
   * Reads every live metric (its collect() runs, as prom-client's own scrape would) and formats again
   * those whose values differ from the last time. True when any did.
   */
  async #readLive(format: FormattingRegistry): Promise<boolean> {
    let changed = false;
    const now = performance.now();
    const collectDue = now - this.#collectAt >= (this.opts.collectMaxAgeMs ?? 250);
    if (collectDue) this.#collectAt = now;
    for (const m of this.#live) {
      const seen = this.#seen.get(m);
      if (seen && unchanged(m, seen)) continue;
      if (seen && !collectDue && computedWhenRead(m)) continue;
      const read = readNow(m);
      const d =
        read === undefined
          ? ((await m.get()) as unknown as MetricData)
          : read instanceof Promise
            ? await read
            : read;
      if (seen && sameValues(seen, d.values ?? [])) continue;
      // formats the values just read: a second get() would run collect() again
      const text = await format.getMetricsAsString({ get: () => Promise.resolve(d) } as unknown as Metric);
      this.#seen.set(m, { read: d.values ?? [], values: copyValues(d.values ?? []), text });
      changed = true;
    }
    if (!changed && !this.#liveSorted) return false;
    this.#liveText = joined(this.#live.map((m) => this.#seen.get(m)!.text));
    this.#liveSorted = false;
    return true;
  }

  #build(): Snapshot {
    const tail = `${this.#runtimeText}${this.#liveText}`;
    // families are joined with a blank line after each; the body ends with one newline
    if (tail) return new Snapshot(this.#part, Buffer.from(tail.slice(0, -1)));
    const whole = this.#polledText.slice(0, -1);
    return new Snapshot(new GzipPart(Buffer.from(whole || '\n')), Buffer.alloc(0));
  }
}

/** What prom-client's Gauge and Counter keep: their values by label set, and an optional collect(). */
interface Plain {
  name: string;
  help: string;
  type: string;
  aggregator: string;
  hashMap?: Record<string, { value: number; labels?: Record<string, unknown> }>;
  collect?: () => unknown;
}

/**
 * A Gauge's or Counter's data as its get() gives it, read without a promise: every request reads
 * some fifty of them, and their async get() was the larger part of a scrape's cost (a promise only
 * when collect() is async). Undefined for any other kind of metric: those are read with get().
 */
function readNow(m: Metric): MetricData | Promise<MetricData> | undefined {
  if (!(m instanceof Gauge || m instanceof Counter)) return undefined;
  const p = m as unknown as Plain;
  if (p.hashMap === undefined) return undefined;
  const data = (): MetricData => ({
    name: p.name,
    help: p.help,
    type: p.type,
    aggregator: p.aggregator,
    values: Object.values(p.hashMap!),
  });
  const pending = p.collect?.();
  return pending instanceof Promise ? pending.then(data) : data();
}

/** A Gauge or Counter whose values its collect() computes when it is read. */
function computedWhenRead(m: Metric): boolean {
  return (m instanceof Gauge || m instanceof Counter) && (m as unknown as Plain).collect !== undefined;
}

/**
 * A Gauge or Counter without collect() whose value objects are those seen last time, with the same
 * values: checked without reading it into new arrays (most scrapes find every such metric so).
 */
function unchanged(m: Metric, seen: Seen): boolean {
  if (!(m instanceof Gauge || m instanceof Counter)) return false;
  const p = m as unknown as Plain;
  if (p.hashMap === undefined || p.collect) return false;
  let i = 0;
  for (const k in p.hashMap) {
    const e = p.hashMap[k]!;
    if (e !== seen.read[i] || !Object.is(e.value, seen.values[i]!.value)) return false;
    i++;
  }
  return i === seen.read.length;
}

function sameValues(seen: Seen, now: NonNullable<MetricData['values']>): boolean {
  if (seen.values.length !== now.length) return false;
  for (let i = 0; i < now.length; i++) {
    const a = seen.values[i]!;
    const b = now[i]!;
    if (!Object.is(a.value, b.value)) return false;
    // the same object as last time (an inc() changes its value in place, checked above): same labels
    if (seen.read[i] === b) continue;
    if (a.name !== b.metricName) return false;
    const labels = b.labels ?? {};
    let n = 0;
    for (const k in labels) {
      if (a.labels[k] !== labels[k]) return false;
      n++;
    }
    if (n !== Object.keys(a.labels).length) return false;
  }
  return true;
}

function copyValues(values: NonNullable<MetricData['values']>): Seen['values'] {
  return values.map((v) => ({ name: v.metricName, value: v.value, labels: { ...v.labels } }));
}

/** Families joined as prom-client joins them: a blank line between two (and after the last). */
function joined(texts: string[]): string {
  return texts.length ? `${texts.join('\n\n')}\n\n` : '';
}
