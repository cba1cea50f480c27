import { describe, expect, it } from 'vitest';
import { Lifecycle } from '../../src/lifecycle/lifecycle.js';
import { Service } from '../../src/lifecycle/service.js';
import { createLogger } from '../../src/log/logger.js';

const logger = createLogger({ level: 'silent', format: 'json' });

class Counting extends Service {
  starts = 0;
  stops = 0;
  constructor(
    readonly name: string,
    private readonly events: string[] = [],
    private readonly failStart = false,
  ) {
    super();
  }
  protected async onStart() {
    this.starts++;
    this.events.push(`start ${this.name}`);
    if (this.failStart) throw new Error(`${this.name} failed to start`);
  }
  protected async onStop() {
    this.stops++;
    this.events.push(`stop ${this.name}`);
  }
}

describe('Service', () => {
  it('start() and stop() are safe to call twice, and concurrently', async () => {
    const s = new Counting('a');
    await Promise.all([s.start(), s.start()]);
    await s.start();
    expect(s.starts).toBe(1);
    expect(s.running).toBe(true);
    await Promise.all([s.stop(), s.stop()]);
    await s.stop();
    expect(s.stops).toBe(1);
    expect(s.running).toBe(false);
    await expect(s.start()).rejects.toThrow(/start\(\) after stop\(\)/);
  });

  it('stop() before start() does nothing; a failed start still gets its cleanup', async () => {
    const never = new Counting('never');
    await never.stop();
    expect(never.stops).toBe(0);
    const broken = new Counting('broken', [], true);
    await expect(broken.start()).rejects.toThrow(/failed to start/);
    await broken.stop();
    expect(broken.stops).toBe(1);
  });
});

describe('Lifecycle', () => {
  it('stops in reverse order of start, including deferred cleanups, and goes on past a failing stop', async () => {
    const events: string[] = [];
    const lc = new Lifecycle(logger);
    await lc.start(new Counting('pool', events));
    lc.defer('temp dir', () => void events.push('stop temp dir'));
    await lc.start(new Counting('http', events));
    lc.defer('exploding', () => {
      throw new Error('boom');
    });
    await lc.stopAll();
    expect(events).toEqual(['start pool', 'start http', 'stop http', 'stop temp dir', 'stop pool']);
    await lc.stopAll(); // nothing left: a second call is a no-op
    expect(events).toHaveLength(5);
  });

  it('registers a component before starting it, so a half-started one is stopped too', async () => {
    const events: string[] = [];
    const lc = new Lifecycle(logger);
    await lc.start(new Counting('ok', events));
    await expect(lc.start(new Counting('half', events, true))).rejects.toThrow();
    await lc.stopAll();
    expect(events).toEqual(['start ok', 'start half', 'stop half', 'stop ok']);
  });
});
