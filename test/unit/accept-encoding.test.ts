import { describe, expect, it } from 'vitest';
import { chooseCoding } from '../../src/http/accept-encoding.js';

describe('Accept-Encoding for /metrics', () => {
  it.each([
    [undefined, 'identity'], // no header: plain, what curl and a person get
    ['', 'identity'], // an empty header: only identity is acceptable
    ['gzip', 'gzip'], // Prometheus
    ['gzip, deflate', 'gzip'], // undici's fetch
    ['GZIP', 'gzip'],
    ['x-gzip', 'gzip'],
    ['deflate, br', 'identity'], // nothing we make
    ['*', 'gzip'],
    ['gzip;q=0', 'identity'], // refused
    ['gzip; q=0.000', 'identity'],
    ['gzip;q=0, identity;q=0.5', 'identity'],
    ['gzip;q=0.5, identity;q=0.8', 'identity'], // weights decide
    ['gzip;q=0.8, identity;q=0.5', 'gzip'],
    ['gzip;q=0.5, *', 'identity'], // `*` covers identity, at 1
    ['identity;q=0, gzip', 'gzip'],
    ['*;q=0, gzip', 'gzip'],
    ['identity;q=0', undefined], // neither: 406
    ['*;q=0', undefined],
    ['gzip;q=0, identity;q=0', undefined],
    ['gzip;q=2', 'identity'], // a malformed weight voids its item
    ['gzip;q=abc', 'identity'],
    ['gzip;level=9', 'gzip'], // other parameters are not weights
    [' , gzip ,', 'gzip'],
  ])('%j → %s', (header, coding) => {
    expect(chooseCoding(header)).toBe(coding);
  });
});
