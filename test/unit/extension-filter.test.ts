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
