// Parallel gzip: independent members that concatenate to one valid .gz, compared with real gzip -6.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ParallelGzip } from '../../src/backup/gzip-parallel.js';

/** Text shaped like a plain pg_dump: COPY blocks of uuids, e-mails, md5s, timestamps. */
function sqlLike(bytes: number): Buffer {
  const lines: string[] = ['COPY public.users (id, email, password_hash, created_at) FROM stdin;'];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const line = `${randomBytes(16).toString('hex')}\tuser${i}@example.com\t${randomBytes(16).toString('hex')}\t2026-11-${String(1 + (i % 28)).padStart(2, '0')} 12:${String(i % 60).padStart(2, '0')}:00+00`;
    lines.push(line);
    size += line.length + 1;
  }
  return Buffer.from(`${lines.join('\n')}\n\\.\n`);
}

async function compress(input: Buffer, threads: number, blockSize?: number) {
  const gz = new ParallelGzip({ level: 6, threads, ...(blockSize ? { blockSize } : {}) });
  const chunks = [];
  for (let i = 0; i < input.length; i += 65536) chunks.push(input.subarray(i, i + 65536));
  const out = await buffer(Readable.from(chunks).pipe(gz));
  return { out, gz };
}

describe('ParallelGzip', () => {
  it('writes several members in order that gunzip (zlib and the gzip program) reads back as the input', async () => {
    const input = sqlLike(6 * 1024 * 1024);
    const { out, gz } = await compress(input, 4);
    expect(gz.members).toBeGreaterThan(4);
    expect(gz.bytesIn).toBe(input.length);
    expect(gunzipSync(out).equals(input)).toBe(true);
    const viaGzip = execFileSync('gzip', ['-dc'], { input: out, maxBuffer: 64 * 1024 * 1024 });
    expect(viaGzip.equals(input)).toBe(true);
    execFileSync('gzip', ['-t'], { input: out });
  });

  it('stays within 5 % of gzip -6 on dump-shaped text', async () => {
    const input = sqlLike(8 * 1024 * 1024);
    const { out } = await compress(input, 2);
    const reference = execFileSync('gzip', ['-6', '-c'], { input, maxBuffer: 64 * 1024 * 1024 });
    const ratio = out.length / reference.length;
    expect(ratio).toBeLessThan(1.05);
  });

  it('writes a valid gzip file for empty input', async () => {
    const { out, gz } = await compress(Buffer.alloc(0), 2);
    expect(gz.members).toBe(1);
    expect(gunzipSync(out).length).toBe(0);
  });

  it('keeps memory bounded: a slow consumer holds back the producer', async () => {
    const gz = new ParallelGzip({ level: 1, threads: 2, blockSize: 64 * 1024 });
    let written = 0;
    const block = randomBytes(64 * 1024);
    // write without reading: the transform must stop accepting after its in-flight limit
    while (gz.write(block)) {
      written += block.length;
      if (written > 64 * 1024 * 1024) break;
    }
    expect(written).toBeLessThan(8 * 1024 * 1024);
    gz.destroy();
  });
});
