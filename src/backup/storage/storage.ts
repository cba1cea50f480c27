/** Where backups live: a local directory or an S3 bucket. Keys are relative to the storage root. */
import type { Readable } from 'node:stream';

export interface StoredObject {
  key: string;
  size: number;
  lastModified: Date;
}

export interface PutProgress {
  /** Bytes the backend has accepted so far. */
  stored(): number;
}

export interface Storage {
  /** s3://bucket/prefix or the absolute directory, for logs and messages. */
  readonly description: string;
  /** Checks the destination exists and is usable; throws an OperatorError saying what to fix. */
  check(): Promise<void>;
  /**
   * Stores a stream under `key` atomically: when this resolves the object is complete; when it
   * rejects (the stream failed, the signal fired, the backend failed) nothing is left under `key`.
   */
  putStream(
    key: string,
    body: Readable,
    opts: { signal: AbortSignal; expectedBytes?: number; progress?: (bytes: number) => void },
  ): Promise<void>;
  putSmall(key: string, content: string): Promise<void>;
  getStream(key: string, signal?: AbortSignal): Promise<Readable>;
  getSmall(key: string): Promise<Buffer | undefined>;
  /** Every object whose key starts with `prefix`. Throws when the listing fails (never a partial list). */
  list(prefix: string): Promise<StoredObject[]>;
  /** Deletes keys (in batches where the backend allows); throws if any deletion failed. */
  delete(keys: string[]): Promise<void>;
  close(): void;
}
