// The queue in front of bcrypt: turns taken by client, bounded waiting, a bounded share of the time,
// and a caller that leaves giving its place up. Tasks are timers standing in for bcrypt checks
// (the real checks are in test/integration/http-auth-flood.test.ts).
import { describe, expect, it } from 'vitest';
import { FairQueue, QueueAborted, QueueFull } from '../../src/http/fair-queue.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('FairQueue', () => {
  it('takes turns by client: one arriving behind a flood runs next, not after it', async () => {
    const q = new FairQueue({ perClient: 10, total: 100, share: 1 });
    const order: string[] = [];
    const task = (name: string) => () => sleep(10).then(() => order.push(name));
    const flood = ['a1', 'a2', 'a3', 'a4'].map((n) => q.run('10.0.0.1', task(n))); // a1 runs at once
    const late = q.run('10.0.0.2', task('b1'));
    await Promise.all([...flood, late]);
    expect(order).toEqual(['a1', 'b1', 'a2', 'a3', 'a4']);
  });

  it('refuses at once past the limit per client; past the limit in all, the client waiting most gives way', async () => {
    const q = new FairQueue({ perClient: 2, total: 3, share: 1 });
    const slow = () => sleep(30);
    const first = q.run('a', slow); // runs at once: not waiting
    const waiting = [q.run('a', slow), q.run('a', slow)];
    await expect(q.run('a', slow)).rejects.toBeInstanceOf(QueueFull);
    const other = q.run('b', slow); // another client still gets in: 3 waiting in all
    // all places taken: c (none waiting) takes the newest of a's two; b, waiting once, keeps its own
    const newcomer = q.run('c', slow);
    await expect(waiting[1]).rejects.toBeInstanceOf(QueueFull);
    await expect(q.run('d', slow)).rejects.toBeInstanceOf(QueueFull); // each waits once now: no one gives way
    await Promise.all([first, waiting[0], other, newcomer]);
    await q.run('a', slow); // room again
  });

  it('a newcomer gets in behind a flood from a few addresses, however long the flood lasts', async () => {
    const q = new FairQueue({ perClient: 4, total: 8, share: 1 });
    const refusedFlood: Promise<unknown>[] = [];
    // two flooding addresses keep every place taken
    for (let i = 0; i < 20; i++)
      for (const ip of ['10.0.0.1', '10.0.0.2'])
        refusedFlood.push(q.run(ip, () => sleep(5)).catch(() => 'refused'));
    const scrape = q.run('10.0.0.9', async () => 'served');
    await expect(scrape).resolves.toBe('served');
    await Promise.all(refusedFlood);
  });

  it('gives a waiting place up when its caller leaves, and the task never runs', async () => {
    const q = new FairQueue({ perClient: 2, total: 10, share: 1 });
    let ran = false;
    const running = q.run('a', () => sleep(20));
    const gone = new AbortController();
    const left = q.run('a', async () => void (ran = true), gone.signal);
    gone.abort();
    await expect(left).rejects.toBeInstanceOf(QueueAborted);
    expect(q.waiting).toBe(0);
    await running;
    await q.run('a', async () => undefined); // had the task kept its place, it would have run first
    expect(ran).toBe(false);
  });

  it('leaves the tasks at most their share of the time, however many wait', async () => {
    const q = new FairQueue({ perClient: 10, total: 10, share: 0.5 });
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 5 }, () => q.run('a', () => sleep(20))));
    const elapsed = performance.now() - t0;
    // five tasks of >= 20 ms, with a pause as long as each task between them
    expect(elapsed).toBeGreaterThanOrEqual(5 * 20 + 4 * 20 - 5);
    expect(q.busyMs / elapsed).toBeLessThanOrEqual(0.56);
  });

  it('close() refuses what waits', async () => {
    const q = new FairQueue({ perClient: 5, total: 5, share: 1 });
    const running = q.run('a', () => sleep(10));
    const waiting = q.run('a', () => sleep(10));
    q.close();
    await expect(waiting).rejects.toBeInstanceOf(QueueFull);
    await running;
    await expect(q.run('a', () => sleep(1))).rejects.toBeInstanceOf(QueueFull);
  });
});
