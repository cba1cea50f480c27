// What is read from the store is data: manifests parse strictly, table names only as two identifiers
// that reach SQL quoted, and signatures tell a manifest written with the key from anything else.
import { describe, expect, it } from 'vitest';
import { parseManifest, parseVerifyRecord, type ManifestV2 } from '../../src/backup/manifest.js';
import { canonicalJson, Signer } from '../../src/backup/signing.js';
import { parseTableName, quotedTableName } from '../../src/backup/table-name.js';

const KEY_A = Buffer.from('a'.repeat(40));
const KEY_B = Buffer.from('b'.repeat(40));

function manifest(over: Record<string, unknown> = {}): ManifestV2 {
  return {
    manifestVersion: 2,
    key: 'app/app_20261202_061402-a1b2c3d4.sql.gz',
    database: 'app',
    format: 'plain',
    compression: { algorithm: 'gzip', level: 6, members: 1 },
    size: 10,
    sha256: 'f'.repeat(64),
    pgDumpVersion: '15.18',
    serverVersion: '15.18',
    serverVersionNum: 150018,
    systemIdentifier: '7714589008455416012',
    databaseTime: '2026-12-02T06:14:02.000Z',
    startedAt: '2026-12-02T06:14:02.100Z',
    finishedAt: '2026-12-02T06:14:03.100Z',
    durationSeconds: 1,
    rowCounts: {
      'public.users': { rows: 3, exact: true },
      '"Odd ""Schema"""."t.1"': { rows: 0, exact: true },
    },
    warnings: [],
    tool: 'pg-maintd 0.1.0',
    ...over,
  } as ManifestV2;
}
const raw = (m: unknown) => JSON.stringify(m);

describe('table names from a manifest', () => {
  it('parses what format(%I.%I) writes and quotes it again', () => {
    expect(parseTableName('public.users')).toEqual({ schema: 'public', table: 'users' });
    const odd = parseTableName('"Odd ""Schema"""."t.1"')!;
    expect(odd).toEqual({ schema: 'Odd "Schema"', table: 't.1' });
    expect(quotedTableName(odd)).toBe('"Odd ""Schema"""."t.1"');
  });

  it.each([
    'public.t; CREATE ROLE pwned SUPERUSER',
    'public.t --',
    '(SELECT 1) x',
    'public."t',
    'users',
    'Public.users', // quote_ident would have quoted it
    'public.t.u',
    '"a"."b"; DROP TABLE x',
    '',
  ])('refuses %j', (text) => expect(parseTableName(text)).toBeUndefined());
});

describe('manifests', () => {
  it('reads both versions', () => {
    expect(parseManifest(raw(manifest()), 'k').manifestVersion).toBe(2);
    const { systemIdentifier: _s, databaseTime: _d, warnings: _w, ...v1 } = manifest({ manifestVersion: 1 });
    expect(parseManifest(raw(v1), 'k').manifestVersion).toBe(1);
  });

  it.each([
    ['an unknown field', { extra: 1 }],
    ['a table name with SQL in it', { rowCounts: { 'public.t; CREATE ROLE x': { rows: 1, exact: true } } }],
    ['an extra field in a row count', { rowCounts: { 'public.t': { rows: 1, exact: true, sql: 'x' } } }],
    ['a date that is not ISO', { startedAt: 'tomorrow' }],
    ['a checksum that is not hex', { sha256: 'z'.repeat(64) }],
    ['a database name too long', { database: 'x'.repeat(64) }],
    ['a control character in a version', { pgDumpVersion: '15\n18' }],
    ['a negative size', { size: -1 }],
    ['an unknown version', { manifestVersion: 3 }],
    ['a malformed signature', { signature: { algorithm: 'md5', keyId: '0', value: '0' } }],
  ])('refuses %s', (_what, over) => {
    expect(() => parseManifest(raw(manifest(over as Record<string, unknown>)), 'k')).toThrow(/manifest k/);
  });

  it('refuses what is not JSON, and what is too large to read', () => {
    expect(() => parseManifest('{', 'k')).toThrow(/not valid JSON/);
    expect(() => parseManifest(Buffer.alloc(65 * 1024 ** 2, 32), 'k')).toThrow(/larger than/);
  });

  it('drill records parse strictly too', () => {
    const rec = {
      key: 'k',
      ok: true,
      result: 'ok',
      verifiedAt: '2026-12-02T06:14:02.000Z',
      durationSeconds: 1,
      tablesCompared: 1,
      mismatches: [],
    };
    expect(parseVerifyRecord(raw(rec), 'k').ok).toBe(true);
    expect(() => parseVerifyRecord(raw({ ...rec, result: 'great' }), 'k')).toThrow(/malformed/);
  });
});

describe('signatures', () => {
  it('a signed manifest checks; any change, another key or none does not', () => {
    const signer = new Signer([KEY_A]);
    const signed = signer.sign(manifest());
    expect(signed.signature.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(JSON.stringify(signed)).not.toContain(KEY_A.toString());
    expect(signer.check(signed)).toBe('ok');
    expect(signer.check(JSON.parse(raw(signed)) as object)).toBe('ok'); // through the store and back
    expect(signer.check({ ...signed, size: 11 })).toBe('invalid');
    expect(signer.check({ ...signed, rowCounts: {} })).toBe('invalid');
    expect(signer.check(manifest())).toBe('missing');
    expect(new Signer([KEY_B]).check(signed)).toBe('unknown_key');
    const forged = { ...signed, signature: { ...signed.signature, value: '0'.repeat(64) } };
    expect(signer.check(forged)).toBe('invalid');
  });

  it('rotation: the first key signs, every key in the file verifies', () => {
    const old = new Signer([KEY_A]).sign(manifest());
    const rotated = new Signer([KEY_B, KEY_A]);
    expect(rotated.check(old)).toBe('ok');
    expect(rotated.check(rotated.sign(manifest()))).toBe('ok');
    expect(new Signer([KEY_A]).check(rotated.sign(manifest()))).toBe('unknown_key');
  });

  it('canonical JSON does not depend on the order of keys', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: null } })).toBe(
      canonicalJson({ a: { c: null, d: [2, { e: 0, f: 1 }] }, b: 1 }),
    );
  });
});
