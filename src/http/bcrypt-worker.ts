/**
 * bcrypt checks on a worker thread of their own: bcryptjs is plain JavaScript and a check at cost
 * 10 holds a thread for ~70-150 ms, which on the event loop would stall /healthz, scrapes and every
 * timer. One worker: checks run one at a time (the fair queue in front decides which). A worker
 * that dies fails its checks (denied) and is replaced on the next one.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

// evaluated code, not a file: the same source runs from dist/ and from the TypeScript tests
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptjs);
parentPort.on('message', ({ id, password, hash }) => {
  let match = false;
  try { match = bcrypt.compareSync(password, hash); } catch {}
  parentPort.postMessage({ id, match });
});`;

export class BcryptWorker {
  #worker: Worker | undefined;
  #pending = new Map<number, (match: boolean) => void>();
  #nextId = 0;

  constructor(private readonly onFailure: (err: Error) => void = () => undefined) {}

  /** Whether `password` matches the bcrypt `hash`; false when the worker fails. */
  compare(password: string, hash: string): Promise<boolean> {
    const worker = (this.#worker ??= this.#spawn());
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#pending.set(id, resolve);
      worker.postMessage({ id, password, hash });
    });
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    this.#failAll();
    await worker?.terminate();
  }

  #spawn(): Worker {
    const bcryptjs = createRequire(import.meta.url).resolve('bcryptjs');
    const worker = new Worker(SOURCE, { eval: true, workerData: { bcryptjs } });
    worker.unref(); // owned by the HTTP server, which terminates it on stop
    worker.on('message', ({ id, match }: { id: number; match: boolean }) => {
      const resolve = this.#pending.get(id);
      this.#pending.delete(id);
      resolve?.(match === true);
    });
    const gone = (err: Error) => {
      if (this.#worker !== worker) return; // closed on purpose
      this.#worker = undefined;
      this.#failAll();
      this.onFailure(err);
    };
    worker.on('error', gone);
    worker.on('exit', (code) => gone(new Error(`bcrypt worker exited (code ${code})`)));
    return worker;
  }

  #failAll(): void {
    for (const resolve of this.#pending.values()) resolve(false);
    this.#pending.clear();
  }
}
