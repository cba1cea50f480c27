// The metrics poller's connection budget with stand-in connections: how many are open at once, who
// gets the next one, which are kept idle, and when a closed one gives its slot back.
import { EventEmitter } from 'node:events';
import type pg from 'pg';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { ConnectionBudget, type Lease } from '../../src/metrics/connection-budget.js';
import { budgetFor, marginOf } from '../../src/metrics/server-capacity.js';

/** A stand-in connection: answers the capacity query; end() resolves when the test says the server let go. */
class FakeClient extends EventEmitter {
  released = false;
  ended = false;
  #letGo: (() => void) | undefined;
  constructor(
    readonly database: string,
    private readonly capacity: () => { slots: number; used: number },
    private readonly holdClose: boolean,
  ) {
    super();
  }
  query() {
    return Promise.resolve({ rows: [this.capacity()] });
  }
  release() {
    this.released = true;
  }
  end(): Promise<void> {
    if (!this.holdClose) return this.#finish();
    return new Promise<void>((r) => (this.#letGo = () => void this.#finish().then(r)));
  }
  letGo() {
    this.#letGo?.();
  }
  #finish() {
    this.ended = true;
    this.emit('end');
    return Promise.resolve();
  }
}

function budget(o: { max?: number; holdClose?: boolean; capacity?: { slots: number; used: number } } = {}) {
  const opened: FakeClient[] = [];
  const target = { now: 'db1:5432' };
  const capacity = o.capacity ?? { slots: 97, used: 5 };
  const b = new ConnectionBudget({
    max: o.max ?? 3,
    main: 'postgres',
    open: async (database) => {
      const c = new FakeClient(database, () => capacity, o.holdClose ?? false);
      opened.push(c);
      return c as unknown as pg.PoolClient;
    },
    targetOf: () => target.now,
    idleMs: 60_000,
    capacityEveryMs: 60_000,
    registry: new Registry(),
    logger: createLogger({ level: 'silent', format: 'json' }),
  });
  const live = () => opened.filter((c) => !c.ended).length;
  return { b, opened, live, capacity, target };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('connection budget', () => {
  it('one connection until the server has been looked at, then METRICS_MAX_CONNECTIONS', async () => {
    const { b, live } = budget();
    expect(b.limit).toBe(1);
    const first = await b.acquire('postgres'); // the look at the server happens on this one
    expect(b.limit).toBe(3);
    const leases = await Promise.all(['a', 'b'].map((d) => b.acquire(d)));
    let fourth: Lease | undefined;
    void b.acquire('c').then((l) => (fourth = l));
    await tick();
    expect(fourth).toBeUndefined(); // three open: the fourth waits
    expect(live()).toBe(3);
    leases[0]!.release();
    await tick();
    await tick();
    expect(fourth).toBeDefined();
    expect(live()).toBe(3);
    first.release();
    leases[1]!.release();
    fourth!.release();
    await b.close();
    expect(live()).toBe(0);
  });

  it('keeps only main-database connections idle, reuses them, and closes one for a database somebody waits for', async () => {
    const { b, opened, live } = budget({ max: 2 });
    const m1 = await b.acquire('postgres');
    const m2 = await b.acquire('postgres');
    m1.release();
    m2.release();
    await tick();
    expect(live()).toBe(2); // both idle, kept
    const again = await b.acquire('postgres');
    expect(opened).toHaveLength(2); // reused, not opened
    again.release();
    const other = await b.acquire('app'); // the budget is full of idle ones: one makes room
    expect(live()).toBe(2);
    expect(opened.filter((c) => c.database === 'app')).toHaveLength(1);
    other.release();
    await tick();
    expect(opened.find((c) => c.database === 'app')!.ended).toBe(true); // not kept
    await b.close();
  });

  it('does not reuse an idle connection to a target the URL file moved away from', async () => {
    const { b, opened, target } = budget({ max: 2 });
    (await b.acquire('postgres')).release();
    await tick();
    target.now = 'db2:5432'; // failed over
    const l = await b.acquire('postgres');
    expect(opened).toHaveLength(2);
    expect(opened[0]!.ended).toBe(true);
    l.release();
    await b.close();
  });

  it('gives a closed connection’s slot back only once the server has let it go', async () => {
    const { b, opened, live } = budget({ max: 1, holdClose: true });
    const first = await b.acquire('postgres');
    expect(b.limit).toBe(1);
    first.release(true);
    let second: Lease | undefined;
    void b.acquire('app').then((l) => (second = l));
    await tick();
    expect(second).toBeUndefined(); // still closing: the server still counts it
    opened[0]!.letGo();
    await tick();
    await tick();
    expect(second).toBeDefined();
    expect(live()).toBe(1);
    second!.release();
    await tick();
    opened[1]!.letGo();
    await b.close();
  });

  it('serves the main database’s waiters first, the others first come, first served', async () => {
    const { b } = budget({ max: 1 });
    const held = await b.acquire('postgres');
    const order: string[] = [];
    const waits = ['x', 'y', 'postgres', 'z', 'postgres'].map((d) =>
      b.acquire(d).then((l) => {
        order.push(d);
        l.release();
      }),
    );
    held.release();
    await Promise.all(waits);
    expect(order).toEqual(['postgres', 'postgres', 'x', 'y', 'z']);
    await b.close();
  });

  it('near the server’s limit, fewer (down to one); close() refuses the waiters', async () => {
    const { b } = budget({ capacity: { slots: 97, used: 87 } }); // its own one among them
    const l = await b.acquire('postgres');
    expect(b.limit).toBe(1);
    const waiting = b.acquire('app');
    await b.close();
    await expect(waiting).rejects.toThrow(/stopping/);
    l.release();
  });

  it('budgetFor leaves a tenth of the slots (at least three) to the others', () => {
    expect(marginOf(97)).toBe(10);
    expect(marginOf(10)).toBe(3);
    expect(budgetFor(3, { slots: 97, used: 10 }, 0)).toBe(3);
    // 97 slots, 84 others: 13 free, 10 left to them, 3 for us
    expect(budgetFor(3, { slots: 97, used: 84 }, 0)).toBe(3);
    expect(budgetFor(3, { slots: 97, used: 85 }, 0)).toBe(2);
    expect(budgetFor(3, { slots: 97, used: 86 }, 0)).toBe(1);
    expect(budgetFor(3, { slots: 97, used: 97 }, 0)).toBe(1);
    // the poller's own connections are its to keep
    expect(budgetFor(3, { slots: 97, used: 87 }, 3)).toBe(3);
    expect(budgetFor(20, { slots: 97, used: 0 }, 0)).toBe(20);
  });
});
