import { describe, expect, it } from 'vitest';
import { ArchiveLag } from '../../src/pitr/archive-lag.js';

describe('ArchiveLag', () => {
  it('knows nothing before the stored position is known', () => {
    const lag = new ArchiveLag();
    lag.sample(1000n, 0);
    expect(lag.lag(1000)).toBeUndefined();
  });

  it('measures bytes from the newest sample and seconds from the oldest sample the store lacks', () => {
    const lag = new ArchiveLag();
    lag.storedUpTo(100n);
    lag.sample(100n, 0); // caught up then
    lag.sample(200n, 1000); // the first byte the store lacks was there by t=1s
    lag.sample(300n, 2000);
    expect(lag.lag(5000)).toEqual({ bytes: 200, seconds: 4 });
    lag.storedUpTo(250n); // the sample of t=1s is stored now, that of t=2s is not
    expect(lag.lag(5000)).toEqual({ bytes: 50, seconds: 3 });
    lag.storedUpTo(300n);
    expect(lag.lag(5000)).toEqual({ bytes: 0, seconds: 0 });
  });

  it('never moves the stored position back, except by reset', () => {
    const lag = new ArchiveLag();
    lag.storedUpTo(500n);
    lag.storedUpTo(100n);
    expect(lag.stored).toBe(500n);
    lag.reset();
    expect(lag.stored).toBeUndefined();
  });

  it('keeps a bounded number of samples, and the oldest one the store lacks', () => {
    const lag = new ArchiveLag();
    lag.storedUpTo(0n);
    for (let i = 1; i <= 5000; i++) lag.sample(BigInt(i), i * 1000);
    // a long outage keeps its true age
    expect(lag.lag(5000 * 1000)).toEqual({ bytes: 5000, seconds: 4999 });
    lag.storedUpTo(4000n);
    const after = lag.lag(5000 * 1000)!;
    expect(after.bytes).toBe(1000);
    expect(after.seconds).toBeGreaterThanOrEqual(999);
    expect(after.seconds).toBeLessThanOrEqual(1000);
  });
});
