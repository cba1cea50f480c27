import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { ExtensionFilter } from '../../src/backup/extension-filter.js';

const DUMP = [
  'SET statement_timeout = 0;',
  'CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;',
  "COMMENT ON EXTENSION pg_stat_statements IS 'track planning and execution statistics of all SQL statements executed';",
  'CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;',
  'CREATE TABLE public.t (line text);',
  'COPY public.t (line) FROM stdin;',
  'CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;', // data, not a statement
  '\\.',
  '',
].join('\n');

async function filtered(chunkSize: number): Promise<{ text: string; dropped: number }> {
  const bytes = Buffer.from(DUMP);
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  const filter = new ExtensionFilter(['pg_stat_statements']);
  const out = await buffer(Readable.from(chunks).pipe(filter));
  return { text: out.toString(), dropped: filter.dropped };
}

describe('extension filter (restore drills)', () => {
  it('drops the chosen extension before the data, keeps everything else byte for byte, at any chunking', async () => {
    const expected = DUMP.split('\n')
      .filter((l, i) => i !== 1 && i !== 2)
      .join('\n');
    for (const size of [1, 7, 64, 100_000]) {
      const { text, dropped } = await filtered(size);
      expect(text, `chunks of ${size}`).toBe(expected);
      expect(dropped).toBe(2);
    }
  });
});

describe('a very long line before the data', () => {
  it('is passed through as it comes, in time linear in its length, and filtering goes on after it', async () => {
    const long = `COMMENT ON TABLE public.t IS '${'x'.repeat(8 * 1024 ** 2)}';\n`;
    const dump = `${long}CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;\nSELECT 1;\n`;
    const bytes = Buffer.from(dump);
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += 65536) chunks.push(bytes.subarray(i, i + 65536));
    const filter = new ExtensionFilter(['pg_stat_statements']);
    const cpu = process.cpuUsage();
    const out = (await buffer(Readable.from(chunks).pipe(filter))).toString();
    // held pieces joined over and over took seconds of CPU here (time squared in the length)
    expect(process.cpuUsage(cpu).user / 1e6).toBeLessThan(2);
    expect(out).toBe(`${long}SELECT 1;\n`);
    expect(filter.dropped).toBe(1);
  });
});
