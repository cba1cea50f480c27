// The guard in front of psql: the script is restored in restricted mode (no meta-command runs), with
// exactly pg_dump's own \restrict K and \unrestrict K left out, and every other byte passed on.
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { psqlRestrictProblem, RESTORE_SESSION_SQL, RestrictGuard } from '../../src/backup/psql-guard.js';

async function through(input: string, chunk = 0): Promise<string> {
  const buf = Buffer.from(input);
  const chunks = chunk
    ? Array.from({ length: Math.ceil(buf.length / chunk) }, (_, i) =>
        buf.subarray(i * chunk, (i + 1) * chunk),
      )
    : [buf];
  const out: Buffer[] = [];
  for await (const c of Readable.from(chunks).pipe(new RestrictGuard())) out.push(c as Buffer);
  return Buffer.concat(out).toString();
}

/** The output without the guard's own first two lines (its \restrict and the session settings). */
async function body(input: string, chunk = 0): Promise<string> {
  const out = await through(input, chunk);
  const first = out.indexOf('\n') + 1;
  expect(out.slice(first, first + RESTORE_SESSION_SQL.length)).toBe(RESTORE_SESSION_SQL);
  return out.slice(first + RESTORE_SESSION_SQL.length);
}

const K = 'ViS306XEBKRxzCUlThBU4v21rAxcXqxhhTVROEE1M6ugJFI6egqnpZUd9sbZzJp';
const DUMP = [
  '--',
  '-- PostgreSQL database dump',
  '--',
  '',
  `\\restrict ${K}`,
  '',
  'SET statement_timeout = 0;',
  // a comment that holds what looks like a COPY start, and lines like pg_dump's but for another key
  "COMMENT ON INDEX m.ci IS E'harmless note\\nCOPY x FROM stdin;\\nend';",
  "COMMENT ON TABLE m.c IS 'line one",
  '\\restrict abc123',
  '\\unrestrict abc123',
  "line three';",
  'COPY public.t (a) FROM stdin;',
  '\\restrict abcDEF123',
  '\\.',
  'SELECT 1;',
  '',
  `\\unrestrict ${K}`,
  '',
].join('\n');
const EXPECTED = DUMP.replace(`\\restrict ${K}`, '').replace(`\\unrestrict ${K}\n`, '');

describe('RestrictGuard', () => {
  it("opens in restricted mode under a key of its own and leaves out exactly pg_dump's \\restrict K and \\unrestrict K", async () => {
    const out = await through(DUMP);
    expect(out.split('\n')[0]).toMatch(/^\\restrict [0-9a-f]{48}$/);
    expect(out).not.toContain(K);
    expect(await body(DUMP)).toBe(EXPECTED);
  });

  it('gives the same output whatever the chunking', async () => {
    for (const size of [1, 2, 3, 5, 7, 64, 100])
      expect(await body(DUMP, size), `chunks of ${size}`).toBe(EXPECTED);
  });

  it('keeps lines that only look like them: another key, a \\restrict after the first statement, a key of pg_dump inside a longer line', async () => {
    const script = `-- x\nSELECT 1;\n\\restrict ${K}\n\\unrestrict ${K}\nSELECT '\\unrestrict ${K}';\n`;
    expect(await body(script)).toBe(script); // no \restrict in the header: nothing is left out
    const withKey = `\\restrict ${K}\nSELECT 'x\n\\unrestrict ${K}x';\n\\unrestrict ${K}`;
    expect(await body(withKey, 3)).toBe(`\nSELECT 'x\n\\unrestrict ${K}x';\n`);
  });

  it('uses a new key each time and passes a meta-command of the script on (psql refuses it)', async () => {
    const a = await through('\\! touch /tmp/x\n');
    const b = await through('\\! touch /tmp/x\n');
    expect(a.split('\n')[0]).not.toBe(b.split('\n')[0]);
    expect(a).toContain('\\! touch /tmp/x\n');
  });

  it('passes a very long line through', async () => {
    const long = `SELECT '${'x'.repeat(3 * 1024 ** 2)}';\n`;
    expect(await body(long, 65536)).toBe(long);
  });

  it('refuses a psql too old for \\restrict', () => {
    expect(psqlRestrictProblem(15, 13)).toMatch(/psql 15\.13 cannot restrict meta-commands/);
    expect(psqlRestrictProblem(15, 14)).toBeUndefined();
    expect(psqlRestrictProblem(13, 21)).toBeDefined();
    expect(psqlRestrictProblem(17, 6)).toBeUndefined();
    expect(psqlRestrictProblem(12, 99)).toBeDefined();
    expect(psqlRestrictProblem(18, 0)).toBeUndefined();
  });
});
