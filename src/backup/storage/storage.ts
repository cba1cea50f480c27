/** Where backups live: a local directory or an S3 bucket. Keys are relative to the storage root. */
import type { Readable } from 'node:stream';
import { OperatorError } from '../../core/errors.js';
import { EXIT } from '../../core/exit-codes.js';

export interface StoredObject {
  key: string;
  size: number;
  /** When the store says the object was written, by its own clock. */
  lastModified: Date;
}

export interface Storage {
  /** s3://bucket/prefix or the absolute directory, for logs and messages. */
  readonly description: string;
  /** Checks the destination exists and is usable; throws an OperatorError saying what to fix. */
  check(): Promise<void>;
  /**
   * Stores a stream under `key` atomically: when this resolves the object is complete; when it
   * rejects (the stream failed, the signal fired, the backend failed) nothing is left under `key`.
   * It never replaces an object: a key already taken fails with ObjectExistsError.
   */
  putStream(
    key: string,
    body: Readable,
    opts: { signal: AbortSignal; expectedBytes?: number; progress?: (bytes: number) => void },
  ): Promise<void>;
  /** Stores a small object; a key already taken fails with ObjectExistsError (nothing is ever rewritten). */
  putSmall(key: string, content: string): Promise<void>;
  getStream(key: string, signal?: AbortSignal): Promise<Readable>;

  getSmall(key: string): Promise<Buffer | undefined>;
  /**
   * Every object whose key starts with `prefix`. Throws when the listing fails or cannot be complete
   * (an entry that cannot be read, a truncated answer without a way on): never a partial list.
   */
  list(prefix: string): Promise<StoredObject[]>;
  /**
   * Deletes keys (in batches where the backend allows). A delete the store refuses because the
   * object is locked (S3 Object Lock, an immutable file) is no failure: the key is returned in
   * `locked` and the other keys are still deleted. Throws, after trying every key, if any other
   * deletion failed.
   */
  delete(keys: string[]): Promise<DeleteOutcome>;
  /**
   * The store's own clock now (S3: the Date of its answers; a directory: the modification time of a
   * file just written there), or undefined when it cannot be read. Never the local clock.
   */
  now(): Promise<Date | undefined>;
  /**
   * Whether that clock may be this host's own (a directory on a local disk): it then cannot tell
   * when this host's clock is wrong, and another reference (the database server's) is needed.
   */
  readonly clockMayBeLocal: boolean;
  close(): void;
}

/** An object the store refused to delete because it is locked, and until when if the store says. */
export interface LockedObject {
  key: string;
  until?: Date | undefined;
}

export interface DeleteOutcome {
  locked: LockedObject[];
}

/** The latest retain-until date among locked objects, if any is known. */
export function lockedUntil(locked: readonly LockedObject[]): Date | undefined {
  let latest: Date | undefined;
  for (const l of locked) if (l.until && (!latest || l.until > latest)) latest = l.until;
  return latest;
}

/** A write that would have replaced an object already stored. */
export class ObjectExistsError extends OperatorError {
  constructor(key: string, where: string) {
    super(`an object already exists under ${key} in ${where}: pg-maintd never replaces one`, {
      exitCode: EXIT.DATAERR,
      hint: 'nothing was overwritten; run again (a new run gets a new key), and check who else writes under this prefix',
    });
    this.name = 'ObjectExistsError';
  }
}

/** How long a reading of the store's clock is trusted, carried forward on the monotonic clock. */
const STORE_CLOCK_TTL_MS = 60_000;

/** A reading of a remote clock, carried forward on the monotonic clock (which no wall-clock step moves). */
export class ClockReading {
  #time = 0;
  #at = -Infinity;

  set(time: number): void {
    if (!Number.isFinite(time)) return;
    this.#time = time;
    this.#at = performance.now();
  }

  /** The remote time now, if the reading is recent enough. */
  now(maxAgeMs = STORE_CLOCK_TTL_MS): Date | undefined {
    const age = performance.now() - this.#at;
    return age <= maxAgeMs ? new Date(this.#time + age) : undefined;
  }
}
