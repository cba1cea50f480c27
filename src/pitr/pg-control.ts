/**
 * Facts read from a data directory's own files, for programs PostgreSQL runs in it (archive_command,
 * restore_command) without a database connection: the cluster's system identifier is the first
 * field of global/pg_control, a little-endian uint64 on every platform PostgreSQL packages for.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { validSegmentBytes } from './wal-name.js';

/** pg_control_version of PostgreSQL 13 to 16, 17 and 18: the layout up to xlog_seg_size is the same. */
const KNOWN_CONTROL_VERSIONS = new Set([1300, 1700, 1800]);
/** ControlFileData.xlog_seg_size (after blcksz, relseg_size, xlog_blcksz; initdb --wal-segsize sets it). */
const XLOG_SEG_SIZE_OFFSET = 228;

/**
 * The cluster's WAL segment size from global/pg_control, or undefined when the file is not one this
 * reads (another major version's layout, or a value PostgreSQL would not allow): callers then fall
 * back to the default size and the largest limits.
 */
export async function segmentBytesOf(dataDir: string): Promise<number | undefined> {
  try {
    const fh = await open(join(dataDir, 'global', 'pg_control'), 'r');
    try {
      const buf = Buffer.alloc(XLOG_SEG_SIZE_OFFSET + 4);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      if (bytesRead !== buf.length || !KNOWN_CONTROL_VERSIONS.has(buf.readUInt32LE(8))) return undefined;
      const size = buf.readUInt32LE(XLOG_SEG_SIZE_OFFSET);
      return validSegmentBytes(size) ? size : undefined;
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}

export async function systemIdentifierOf(dataDir: string): Promise<string> {
  const path = join(dataDir, 'global', 'pg_control');
  try {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(8);
      const { bytesRead } = await fh.read(buf, 0, 8, 0);
      if (bytesRead !== 8) throw new Error('it is shorter than 8 bytes');
      const id = buf.readBigUInt64LE(0);
      if (id === 0n) throw new Error('its system identifier is 0');
      return id.toString();
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new OperatorError(
      `cannot read the cluster's system identifier from ${path}: ${errorMessage(err)}`,
      {
        exitCode: EXIT.USAGE,
        hint: 'run this from the data directory (PostgreSQL runs archive_command and restore_command there), or give --data-dir',
        cause: err,
      },
    );
  }
}

/**
 * How many bytes of a WAL file hold data: up to the last non-zero byte. pg_receivewal and the server
 * fill a segment file with zeros before writing WAL into it, so this orders partial copies of a
 * segment by how much WAL they hold, whatever any clock says.
 */
export function writtenBytes(content: Buffer): number {
  let end = content.length;
  while (end > 0 && content[end - 1] === 0) end--;
  return end;
}
