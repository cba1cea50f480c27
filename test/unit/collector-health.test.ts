// The poller's failure bookkeeping: a database that is gone takes its own failures with it, and only
// its own, whatever characters the other databases' names hold.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { CollectorHealthBook } from '../../src/metrics/collector-health.js';
import type { Collector } from '../../src/metrics/collector.js';

describe('collector health', () => {
  it('forgetting database "a" keeps the failures of "b@a" and "xa"', () => {
    const book = new CollectorHealthBook(new Registry(), createLogger({ level: 'silent', format: 'json' }));
    for (const database of ['a', 'b@a', 'xa'])
      book.failed(`stat_user_tables@${database}`, new Error(`down in ${database}`), { database }, 'failed');
    book.forgetDatabase('a');
    const tables = { name: 'stat_user_tables' } as unknown as Collector;
    const [health] = book.report([tables], () => 15_000);
    expect(health!.error).toContain('down in b@a');
    expect(health!.error).toContain('down in xa');
    expect(health!.error).not.toMatch(/down in a\b/);
    expect(book.isFailing('stat_user_tables')).toBe(true);
    book.forgetDatabase('b@a');
    book.forgetDatabase('xa');
    expect(book.isFailing('stat_user_tables')).toBe(false);
  });
});
