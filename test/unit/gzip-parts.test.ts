import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { GzipPart, gzipParts } from '../../src/metrics/gzip-parts.js';

/** Text that compresses like an exposition: repeated names, varying numbers. */
function exposition(lines: number, seed = ''): Buffer {
  let s = '';
  for (let i = 0; i < lines; i++)
    s += `pg_demo_rows{datname="db${i % 7}",relname="t${i}${seed}"} ${i * 1.5}\n`;
  return Buffer.from(s);
}

describe('gzip of a body from a part compressed once and a tail', () => {
  it('is one gzip member that gunzip, and the gzip program, read back to exactly part + tail', async () => {
    for (const [part, tail] of [
      [exposition(3000), exposition(40, 'x')],
      [exposition(3000), Buffer.alloc(0)],
      [exposition(1), Buffer.from('\n')],
      [randomBytes(200_000), randomBytes(5000)], // incompressible: stored blocks
      [Buffer.from('é€😀'.repeat(1000)), Buffer.from('tail')],
    ] as const) {
      const gz = await gzipParts(new GzipPart(part), tail);
      const whole = Buffer.concat([part, tail]);
      expect(gunzipSync(gz).equals(whole)).toBe(true);
      const sys = spawnSync('gzip', ['-dc'], { input: gz, maxBuffer: 1 << 26 });
      expect(sys.status).toBe(0);
      expect(sys.stdout.equals(whole)).toBe(true);
    }
  });

  it('compresses the part once for every tail that follows it', async () => {
    const part = new GzipPart(exposition(3000));
    const first = part.deflated();
    const a = await gzipParts(part, exposition(10, 'a'));
    const b = await gzipParts(part, exposition(20, 'b'));
    expect(part.deflated()).toBe(first);
    expect(gunzipSync(a).equals(Buffer.concat([part.text, exposition(10, 'a')]))).toBe(true);
    expect(gunzipSync(b).equals(Buffer.concat([part.text, exposition(20, 'b')]))).toBe(true);
    const head = (await first).bytes;
    // both bodies carry the part's compressed bytes as they are, after the 10-byte header
    expect(a.subarray(10, 10 + head.length).equals(head)).toBe(true);
    expect(b.subarray(10, 10 + head.length).equals(head)).toBe(true);
    expect(a.length).toBeLessThan(part.text.length / 5);
  });
});
