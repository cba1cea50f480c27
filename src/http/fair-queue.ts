/**
 * Runs expensive tasks (bcrypt checks) one at a time, taking them in turn from each client's own
 * queue, so a client that floods waits behind itself, not behind others. The queues are bounded
 * per client and in all (when all places are taken, a client waiting less takes one from the client
 * waiting most), and the tasks get at most `share` of the wall time: after a task of d ms the next
 * starts d * (1 - share) / share ms later, whatever the flood.
 */

/** The client's queue (or all of them) is full: try again later. */
export class QueueFull extends Error {
  constructor() {
    super('too many checks waiting');
    this.name = 'QueueFull';
  }
}

/** The task's caller gave up (its connection closed) before the task started. */
export class QueueAborted extends Error {
  constructor() {
    super('gave up while waiting');
    this.name = 'QueueAborted';
  }
}

export interface FairQueueLimits {
  /** Tasks waiting per client; more are refused at once. */
  perClient: number;
  /** Tasks waiting in all (many clients at once). */
  total: number;
  /** Share of the wall time the tasks may take, from 0 (exclusive) to 1. */
  share: number;
}

interface Job {
  client: string;
  run: () => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (err: unknown) => void;
  detach: () => void;
}

export class FairQueue {
  /** Clients with work waiting, in turn order: the first gives one task and goes to the back. */
  #queues = new Map<string, Job[]>();
  /** The client whose task runs, out of turn order until it ends: one that arrives meanwhile goes first. */
  #serving: { client: string; queue: Job[] } | undefined;
  #waiting = 0;
  #running = false;
  #restUntil = 0;
  #timer: NodeJS.Timeout | undefined;
  #busyMs = 0;
  #closed = false;

  constructor(private readonly limits: FairQueueLimits) {}

  /** Time spent running tasks so far, in ms. */
  get busyMs(): number {
    return this.#busyMs;
  }

  get waiting(): number {
    return this.#waiting;
  }

  /** Rejects with QueueFull when there is no room, QueueAborted when `signal` fires first. */
  run<T>(client: string, task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const queue = this.#queueOf(client) ?? [];
    if (this.#closed || queue.length >= this.limits.perClient) return Promise.reject(new QueueFull());
    // all places taken: a client with fewer waiting takes one from the client with the most (a few
    // flooding addresses cannot keep a new client out; only many, each waiting once, can)
    if (this.#waiting >= this.limits.total && !this.#evictFor(queue.length))
      return Promise.reject(new QueueFull());
    if (signal?.aborted) return Promise.reject(new QueueAborted());
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        // a caller that left frees its place at once: abandoned requests do not cost bcrypt
        if (this.#remove(job)) reject(new QueueAborted());
      };
      const job: Job = {
        client,
        run: task,
        resolve: resolve as (v: unknown) => void,
        reject,
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      queue.push(job);
      if (this.#serving?.client !== client) this.#queues.set(client, queue);
      this.#waiting++;
      this.#pump();
    });
  }

  /** Refuses what waits; a task already running finishes on its own. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const queue of this.#queues.values())
      for (const job of queue) {
        job.detach();
        job.reject(new QueueFull());
      }
    for (const job of this.#serving?.queue ?? []) {
      job.detach();
      job.reject(new QueueFull());
    }
    this.#queues.clear();
    this.#serving = undefined;
    this.#waiting = 0;
  }

  #pump(): void {
    if (this.#running || this.#timer || this.#closed) return;
    const rest = this.#restUntil - performance.now();
    if (rest > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#pump();
      }, rest);
      this.#timer.unref();
      return;
    }
    const job = this.#next();
    if (!job) return;
    job.detach();
    this.#running = true;
    const t0 = performance.now();
    job
      .run()
      .then(job.resolve, job.reject)
      .finally(() => {
        const took = performance.now() - t0;
        this.#busyMs += took;
        this.#restUntil = performance.now() + (took * (1 - this.limits.share)) / this.limits.share;
        const served = this.#serving;
        this.#serving = undefined;
        if (served?.queue.length) this.#queues.set(served.client, served.queue);
        this.#running = false;
        this.#pump();
      });
  }

  #next(): Job | undefined {
    const first = this.#queues.entries().next();
    if (first.done) return undefined;
    const [client, queue] = first.value;
    this.#queues.delete(client);
    const job = queue.shift()!;
    this.#waiting--;
    this.#serving = { client, queue };
    return job;
  }

  /** Refuses the newest task of the client with the most waiting, if that is two more than `than`. */
  #evictFor(than: number): boolean {
    let longest: Job[] | undefined;
    for (const q of [...this.#queues.values(), ...(this.#serving ? [this.#serving.queue] : [])])
      if (!longest || q.length > longest.length) longest = q;
    if (!longest || longest.length < than + 2) return false;
    const job = longest.at(-1)!;
    this.#remove(job);
    job.detach();
    job.reject(new QueueFull());
    return true;
  }

  #queueOf(client: string): Job[] | undefined {
    return this.#serving?.client === client ? this.#serving.queue : this.#queues.get(client);
  }

  #remove(job: Job): boolean {
    const queue = this.#queueOf(job.client);
    const at = queue?.indexOf(job) ?? -1;
    if (!queue || at < 0) return false;
    queue.splice(at, 1);
    this.#waiting--;
    if (!queue.length) this.#queues.delete(job.client);
    return true;
  }
}
