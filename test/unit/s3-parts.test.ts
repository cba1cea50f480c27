import { describe, expect, it } from 'vitest';
import { chooseQueueSize, choosePartSize, MAX_PARTS } from '../../src/backup/storage/s3.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

describe('S3 multipart sizing', () => {
  it('sizes parts to the database: small databases get S3’s 5 MiB minimum, unknown sizes 16 MiB (160 GiB)', () => {
    expect(choosePartSize(2 * GiB)).toBe(5 * MiB);
    expect(choosePartSize(30 * GiB)).toBe(5 * MiB);
    expect(choosePartSize(100 * GiB)).toBe(16 * MiB);
    expect(choosePartSize(undefined)).toBe(16 * MiB);
    expect((16 * MiB * MAX_PARTS) / GiB).toBeGreaterThan(150);
    expect((5 * MiB * MAX_PARTS) / GiB).toBeLessThan(49);
  });

  it('raises the part size so a dump far beyond 50 GB fits in 10,000 parts', () => {
    for (const size of [200 * GiB, 1024 * GiB, 5 * 1024 * GiB]) {
      const part = choosePartSize(size);
      expect(part * MAX_PARTS).toBeGreaterThanOrEqual(size * 1.5);
      expect(part % MiB).toBe(0);
    }
  });

  it('honours S3_PART_SIZE', () => {
    expect(choosePartSize(1024 * GiB, 8 * MiB)).toBe(8 * MiB);
  });

  it('keeps the buffered parts near 32 MiB whatever the part size', () => {
    expect(chooseQueueSize(8 * MiB)).toBe(4);
    expect(chooseQueueSize(16 * MiB)).toBe(2);
    expect(chooseQueueSize(160 * MiB)).toBe(1);
    expect(chooseQueueSize(5 * MiB)).toBe(4);
  });
});
