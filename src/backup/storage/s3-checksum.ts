/**
 * S3_CHECKSUM: the AWS SDK's integrity checksums, and how to tell when a store refuses them.
 * Since SDK 3.729 every PutObject, CreateMultipartUpload and UploadPart carries a CRC32
 * (x-amz-sdk-checksum-algorithm with x-amz-checksum-crc32, or an aws-chunked body with an
 * x-amz-trailer), and GetObject asks for the stored checksum. Stores that do not implement this
 * answer 400 or 501 to every upload, which without a hint reads like a broken store.
 */
import type { S3ChecksumMode } from '../../config/fields.js';

export type { S3ChecksumMode } from '../../config/fields.js';

/** The S3Client options for a mode. */
export function sdkChecksumOptions(mode: S3ChecksumMode) {
  const value = mode === 'when_supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
  return { requestChecksumCalculation: value, responseChecksumValidation: value } as const;
}

const NAMES_CHECKSUM = /checksum|x-amz-trailer|aws-chunked|content-encoding|x-amz-decoded-content-length/i;

interface S3Failure {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/**
 * A 400 or 501 answer whose message names the checksum headers or the aws-chunked encoding (R2
 * answered `501 NotImplemented: Header 'x-amz-checksum-crc32' with value '...' not implemented`).
 */
export function namesChecksum(err: unknown): boolean {
  const e = err as S3Failure;
  const status = e.$metadata?.httpStatusCode;
  return (status === 400 || status === 501) && NAMES_CHECKSUM.test(e.message ?? '');
}

/**
 * The fix for a failed write in `mode`, when the checksums are the likely cause: the answer names
 * them, or it is a 501 NotImplemented that names nothing (with when_supported every upload carries
 * checksum headers, so they are the likeliest header the store does not implement).
 */
export function checksumHint(err: unknown, mode: S3ChecksumMode): string | undefined {
  if (mode !== 'when_supported') return undefined;
  const e = err as S3Failure;
  const status = e.$metadata?.httpStatusCode;
  if (namesChecksum(err))
    return 'the store refuses the integrity checksums the AWS SDK adds to uploads (CRC32 headers or aws-chunked trailers): set S3_CHECKSUM=when_required (pg-maintd still checks every backup’s SHA-256 itself)';
  if (status === 501 || e.name === 'NotImplemented')
    return 'the store does not implement something this upload asked for; with S3_CHECKSUM=when_supported every upload carries CRC32 checksum headers, which several S3-compatible stores refuse: set S3_CHECKSUM=when_required';
  return undefined;
}
