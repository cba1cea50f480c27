import { gunzipSync } from 'node:zlib';
import { Counter, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Exposition } from '../../src/metrics/exposition.js';
import { CachedFamily } from '../../src/metrics/family.js';
import { createRegistry } from '../../src/metrics/registry.js';

/**
 * The exposition as a set of families (blocks separated by a blank line), order aside; live process
 * and Node values move between two renders, so those families are compared by their header only.
 */
function families(text: string): string[] {
  return text
    .trim()
    .split('\n\n')
    .map((b) => (/^# HELP (process|nodejs)_/.test(b) ? b.split('\n').slice(0, 2).join('\n') : b.trim()))
    .sort();
}

/** Scrapes in one turn of the event loop share one check: the next scrape waits for the next turn. */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe('exposition', () => {
  it('serves what prom-client would, polled families rendered once per change, live metrics per scrape', async () => {
    const registry = createRegistry(); // process and Node metrics: live, rendered per scrape
    const polled = new CachedFamily<'datname'>(registry, {
      name: 'pg_demo_rows',
      help: 'Rows, with "quotes" and a \\ backslash in labels',
      type: 'gauge',
      labelNames: ['datname'],
    });
    const quiet = new CachedFamily(registry, {
      name: 'pg_demo_quiet',
      help: 'Never changes',
      type: 'counter',
    });
    quiet.replace([{ labels: {}, value: 7 }]);
    const hits = new Counter({ name: 'pgmaintd_demo_hits_total', help: 'Live', registers: [registry] });
    polled.replace([
      { labels: { datname: 'a"b\\c\nd' }, value: 1 },
      { labels: { datname: 'app' }, value: 2.5 },
    ]);
    const exposition = new Exposition(registry);

    const first = (await exposition.render()).toString();
    expect(families(first)).toEqual(families(await registry.metrics()));
    expect(first).toContain('pg_demo_rows{datname="a\\"b\\\\c\\nd"} 1');
    const quietText = quiet.rendered;
    expect(quietText).toBeDefined();
    quiet.replace([{ labels: {}, value: 7 }]); // a poll that found the same values
    expect(quiet.rendered).toBe(quietText);

    hits.inc(3); // live: seen on the next scrape without any poll
    polled.replace([{ labels: { datname: 'app' }, value: 9 }]);
    await nextTurn();
    const second = (await exposition.render()).toString();
    expect(second).toMatch(/^pgmaintd_demo_hits_total 3$/m);
    expect(second).toMatch(/^pg_demo_rows\{datname="app"\} 9$/m);
    expect(second).not.toContain('a\\"b');
    expect(quiet.rendered).toBe(quietText); // unchanged: not rendered again
    expect(families(second)).toEqual(families(await registry.metrics()));

    polled.clear(); // a failed collector's series are gone from the very next scrape
    await nextTurn();
    const third = (await exposition.render()).toString();
    expect(third).not.toMatch(/^pg_demo_rows\{/m);
    expect(third).not.toMatch(/^# TYPE pg_demo_rows /m); // an empty family is left out, HELP and TYPE too
    expect(third.endsWith('\n') && !third.endsWith('\n\n')).toBe(true);
  });

  it('keeps a snapshot, and its gzip, until a polled family or a live value changes', async () => {
    const registry = new Registry(); // no process metrics: nothing moves by itself
    const polled = new CachedFamily<'datname'>(registry, {
      name: 'pg_demo_rows',
      help: 'Rows',
      type: 'gauge',
      labelNames: ['datname'],
    });
    polled.replace(Array.from({ length: 2000 }, (_, i) => ({ labels: { datname: `db${i}` }, value: i })));
    const hits = new Counter({ name: 'pgmaintd_demo_hits_total', help: 'Live', registers: [registry] });
    let clients = 3;
    new Gauge({
      name: 'pgmaintd_demo_clients',
      help: 'Read at scrape time',
      registers: [registry],
      collect() {
        this.set(clients);
      },
    });
    const exposition = new Exposition(registry, { collectMaxAgeMs: 0 });

    const a = await exposition.snapshot();
    expect(gunzipSync(await a.gzip()).equals(a.body)).toBe(true);
    expect(a.gzip()).toBe(a.gzip()); // compressed once, shared by every request of the snapshot
    await nextTurn();
    expect(await exposition.snapshot()).toBe(a); // nothing changed: the same bytes, no copy

    clients = 4; // a value set by collect() at scrape time
    expect(await exposition.snapshot()).toBe(a); // a scrape in the same turn shares the check
    await nextTurn();
    const b = await exposition.snapshot();
    expect(b).not.toBe(a);
    expect(b.body.toString()).toMatch(/^pgmaintd_demo_clients 4$/m);
    expect(gunzipSync(await b.gzip()).equals(b.body)).toBe(true);
    await nextTurn();
    expect(await exposition.snapshot()).toBe(b);

    hits.inc(); // a counter incremented in place
    await nextTurn();
    const c = await exposition.snapshot();
    expect(c.body.toString()).toMatch(/^pgmaintd_demo_hits_total 1$/m);
    expect(families(c.body.toString())).toEqual(families(await registry.metrics()));

    new Gauge({ name: 'pgmaintd_demo_new', help: 'Registered later', registers: [registry] }).set(1);
    await nextTurn();
    const d = await exposition.snapshot();
    expect(d.body.toString()).toMatch(/^pgmaintd_demo_new 1$/m);
    expect(families(d.body.toString())).toEqual(families(await registry.metrics()));
    registry.removeSingleMetric('pgmaintd_demo_new');
    await nextTurn();
    expect((await exposition.snapshot()).body.toString()).not.toContain('pgmaintd_demo_new');

    polled.replace([{ labels: { datname: 'app' }, value: 1 }]); // a poll
    await nextTurn();
    const e = await exposition.snapshot();
    expect(e.body.toString()).not.toMatch(/datname="db1"/);
    expect(gunzipSync(await e.gzip()).equals(e.body)).toBe(true);
  });

  it('computes a collect() metric at most once per collectMaxAgeMs; a value set in place shows at once', async () => {
    const registry = new Registry();
    let clients = 3;
    let collected = 0;
    new Gauge({
      name: 'pgmaintd_demo_clients',
      help: 'Read at scrape time',
      registers: [registry],
      collect() {
        collected++;
        this.set(clients);
      },
    });
    const hits = new Counter({ name: 'pgmaintd_demo_hits_total', help: 'Live', registers: [registry] });
    const exposition = new Exposition(registry, { collectMaxAgeMs: 60_000 });
    const a = await exposition.snapshot();
    expect(a.body.toString()).toMatch(/^pgmaintd_demo_clients 3$/m);
    clients = 4;
    hits.inc();
    await nextTurn();
    const b = await exposition.snapshot();
    expect(b.body.toString()).toMatch(/^pgmaintd_demo_hits_total 1$/m); // set in place: at once
    expect(b.body.toString()).toMatch(/^pgmaintd_demo_clients 3$/m); // computed: not again yet
    expect(collected).toBe(1);

    const quick = new Exposition(registry, { collectMaxAgeMs: 1 });
    await quick.snapshot();
    clients = 5;
    const t0 = performance.now();
    while (performance.now() - t0 < 2) await nextTurn();
    expect((await quick.snapshot()).body.toString()).toMatch(/^pgmaintd_demo_clients 5$/m);
  });

  it('notices metrics registered later in the registry pg-maintd makes', async () => {
    const registry = createRegistry();
    const exposition = new Exposition(registry);
    await exposition.snapshot();
    new Gauge({ name: 'pgmaintd_demo_late', help: 'Late', registers: [registry] }).set(2);
    await nextTurn();
    expect((await exposition.snapshot()).body.toString()).toMatch(/^pgmaintd_demo_late 2$/m);
    const family = new CachedFamily(registry, { name: 'pg_demo_late', help: 'Late too', type: 'gauge' });
    family.replace([{ labels: {}, value: 5 }]);
    await nextTurn();
    const body = (await exposition.snapshot()).body.toString();
    expect(body).toMatch(/^pg_demo_late 5$/m);
    expect(body.endsWith('\n') && !body.endsWith('\n\n')).toBe(true);
  });

  it('renders an empty registry as an empty exposition', async () => {
    expect((await new Exposition(new Registry()).render()).toString()).toBe('\n');
  });
});
