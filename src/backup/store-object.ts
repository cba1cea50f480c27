/**
 * Stores one object from a child's output, with no temporary file:
 *   child stdout -> parallel gzip -> [age] -> SHA-256 -> storage
 * Database dumps and the cluster's globals both go through here, so encryption applies to both. It
 * comes after compression (ciphertext does not compress) and before the hash, so the size and
 * checksum are those of the stored bytes: checks and retention need no key. The object completes only if the
 * child exited 0; the first failure (the child, the stream, the store, the signal, or `watch`)
 * kills the child and destroys the stream at once, and every part has settled before it is reported.
 */
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream';
import { ParallelGzip } from './gzip-parallel.js';
import { ByteCounter, EndGate, HashCounter } from './hash.js';
import type { Storage } from './storage/storage.js';

export interface StoreObjectInput {
  storage: Storage;
  key: string;
  /** The child's output and its exit: the object completes only when `exited` resolves. */
  source: Readable;
  exited: Promise<void>;
  kill(): void;
  signal: AbortSignal;
  compression: { level: number; threads: number };
  /** An age encrypter (`ageEncrypter`) for the compressed bytes; absent, they are stored plain. */
  encrypt?: Transform | undefined;
  /** The store's hint for the part size (S3). */
  expectedBytes?: number | undefined;
  /**
   * Another part of the run whose failure stops the write and is its root cause, reported before
   * what it caused (the dump's row counts, counted in the dump's snapshot).
   */
  watch?: Promise<unknown>;
}

export interface StoredStream {
  /** Live counters, for progress logs: bytes read from the child, bytes stored (compressed). */
  readonly raw: ByteCounter;
  readonly hash: HashCounter;
  readonly stored: () => number;
  /** Resolves once the object is complete in the store; rejects with the root cause otherwise. */
  readonly done: Promise<{ size: number; sha256: string; members: number; rawBytes: number }>;
}

export function storeObject(i: StoreObjectInput): StoredStream {
  const raw = new ByteCounter();
  const gzip = new ParallelGzip({ level: i.compression.level, threads: i.compression.threads });
  const hash = new HashCounter();
  const gate = new EndGate(() => i.exited);
  let stored = 0;
  const done = (async () => {
    const piped = new Promise<void>((resolve, reject) =>
      pipeline(
        [i.source, raw, gzip, ...(i.encrypt ? [i.encrypt] : []), hash, gate],
        (err: NodeJS.ErrnoException | null) => (err ? reject(err) : resolve()),
      ),
    );
    let rootCause: { error: unknown } | undefined;
    let putError: unknown;
    let watchError: unknown;
    const put = i.storage
      .putStream(i.key, gate, {
        signal: i.signal,
        expectedBytes: i.expectedBytes,
        progress: (b) => (stored = b),
      })
      .catch((err: unknown) => {
        putError = err;
        throw err;
      });
    const stopAll = (error: unknown) => {
      if (rootCause) return;
      rootCause = { error };
      i.kill();
      gate.destroy(error instanceof Error ? error : new Error(String(error)));
    };
    const onAbort = () => stopAll(i.signal.reason);
    i.signal.addEventListener('abort', onAbort, { once: true });
    i.watch?.catch((err: unknown) => {
      if (i.signal.aborted) return;
      watchError = err;
      stopAll(err);
    });
    try {
      // Wait for all three to settle, so a failed write has removed its temporary file (or aborted
      // its multipart upload) before anything is reported.
      await Promise.allSettled(
        [i.exited, piped, put].map((p) =>
          p.catch((err: unknown) => {
            stopAll(err);
            throw err;
          }),
        ),
      );
      // The storage's verdict first when it has one: it already names the stream's own failure
      // (the child's) when that came first, while a child dying of a pipe the store closed is a
      // symptom. A failed watch is the root cause whatever followed it.
      if (rootCause)
        throw rootCause.error === watchError && watchError !== undefined
          ? watchError
          : (putError ?? rootCause.error);
    } finally {
      i.signal.removeEventListener('abort', onAbort);
    }
    return { size: hash.bytes, sha256: hash.sha256, members: gzip.members, rawBytes: raw.bytes };
  })();
  return { raw, hash, stored: () => stored, done };
}
