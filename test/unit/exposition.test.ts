import { Counter, Registry } from 'prom-client';
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
    const second = (await exposition.render()).toString();
    expect(second).toMatch(/^pgmaintd_demo_hits_total 3$/m);
    expect(second).toMatch(/^pg_demo_rows\{datname="app"\} 9$/m);
    expect(second).not.toContain('a\\"b');
    expect(quiet.rendered).toBe(quietText); // unchanged: not rendered again
    expect(families(second)).toEqual(families(await registry.metrics()));

    polled.clear(); // a failed collector's series are gone from the very next scrape
    const third = (await exposition.render()).toString();
    expect(third).not.toMatch(/^pg_demo_rows\{/m);
    expect(third).not.toMatch(/^# TYPE pg_demo_rows /m); // an empty family is left out, HELP and TYPE too
    expect(third.endsWith('\n') && !third.endsWith('\n\n')).toBe(true);
  });

  it('renders an empty registry as an empty exposition', async () => {
    expect((await new Exposition(new Registry()).render()).toString()).toBe('\n');
  });
});
