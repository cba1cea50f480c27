// Keys in the store: any name PostgreSQL allows becomes one reversible path segment that cannot
// reach another database's folder or pass for a temporary file; keys of earlier releases stay readable.
import { describe, expect, it } from 'vitest';
import {
  dataKey,
  databaseFolder,
  databaseFolders,
  databaseNameProblem,
  decodeName,
  encodeName,
  parseDataKey,
  printable,
} from '../../src/backup/naming.js';
import { isTemporaryKey } from '../../src/backup/storage/fs.js';

const AT = new Date('2026-12-02T06:14:02.123Z');
const ODD = [
  'app',
  'app/eu',
  'sales.partial-eu',
  'zz/../t1',
  '..',
  '.',
  'dbname=other',
  'o\'brien "db"',
  'with space, and comma',
  'データベース',
  'a%2Eb',
  'tab\there\nnewline',
  'x'.repeat(63),
];

describe('database names in keys', () => {
  it.each(ODD.map((n) => [n]))('%j encodes to one safe segment and decodes back exactly', (name) => {
    const folder = databaseFolder(name);
    expect(folder).toMatch(/^[A-Za-z0-9_%-]+$/);
    expect(folder).not.toContain('/');
    expect(decodeName(folder)).toBe(name);
    const key = dataKey(name, AT, 'plain', 'a1b2c3d4');
    expect(key.split('/')).toHaveLength(2);
    expect(isTemporaryKey(key)).toBe(false);
    expect(isTemporaryKey(`${key}.manifest.json`)).toBe(false);
    const parsed = parseDataKey(key)!;
    expect(parsed.databases[0]).toBe(name);
    expect(parsed.at.toISOString()).toBe('2026-12-02T06:14:02.000Z');
    expect(parsed.format).toBe('plain');
  });

  it('only the canonical encoding decodes; anything else is not a name pg-maintd wrote', () => {
    expect(decodeName('app%2eb')).toBeUndefined(); // lowercase hex is never written
    expect(decodeName('%61pp')).toBeUndefined(); // "a" is never encoded
    expect(decodeName('app.b')).toBeUndefined();
    expect(decodeName('%FF')).toBeUndefined(); // not UTF-8
    expect(decodeName('')).toBeUndefined();
  });

  it('two runs in the same second get different keys', () => {
    expect(dataKey('app', AT, 'plain', 'a1b2c3d4')).not.toBe(dataKey('app', AT, 'plain', '0f0f0f0f'));
  });

  it('keys written by earlier releases stay readable: the raw folder, an optional -N', () => {
    expect(parseDataKey('app/app_20261124_200857.sql.gz')?.databases).toEqual(['app']);
    expect(parseDataKey('app/app_20261124_200857-2.dump.gz')?.format).toBe('custom');
    expect(parseDataKey('app.v2/app.v2_20261124_200857.sql.gz')?.databases).toEqual(['app.v2']);
    expect(parseDataKey('sales.partial-eu/sales.partial-eu_20261124_200857.sql.gz')?.databases).toEqual([
      'sales.partial-eu',
    ]);
    // the same folder can be a new encoding and an older raw name: both are candidates, the manifest decides
    expect(parseDataKey('a%2Eb/a%2Eb_20261124_200857.sql.gz')?.databases).toEqual(['a.b', 'a%2Eb']);
    expect(databaseFolders('app.v2')).toEqual(['app%2Ev2', 'app.v2']);
    expect(databaseFolders('app/eu')).toEqual(['app%2Feu']); // earlier releases could not store it
    expect(databaseFolders('..')).toEqual(['%2E%2E']);
  });

  it('refuses what is not a data key', () => {
    for (const key of [
      'app/other_20261124_200857.sql.gz',
      'app/app_20261324_200857.sql.gz', // month 13
      'app/app_20261124_200857.sql',
      '../app/app_20261124_200857.sql.gz',
      'app/app_20261124_200857.sql.gz.partial-abcd1234',
      '../../etc/passwd',
    ])
      expect(parseDataKey(key), key).toBeUndefined();
  });

  it('a temporary file is only the name the directory storage gives one', () => {
    expect(isTemporaryKey('app/app_20261124_200857-a1b2c3d4.sql.gz.partial-0a1b2c3d')).toBe(true);
    expect(isTemporaryKey('sales.partial-eu/sales.partial-eu_20261124_200857.sql.gz')).toBe(false);
  });

  it('names PostgreSQL would not have are refused with a reason', () => {
    expect(databaseNameProblem('')).toMatch(/empty/);
    expect(databaseNameProblem('a\0b')).toMatch(/NUL/);
    expect(databaseNameProblem('é'.repeat(32))).toMatch(/63 bytes \(this one has 64\)/);
    expect(databaseNameProblem('app/eu')).toBeUndefined();
  });

  it('printable() shows control characters as escapes, so a name cannot forge a line of output', () => {
    expect(printable('a\nKEY forged')).toBe('a\\x0aKEY forged');
    expect(encodeName('a\n')).toBe('a%0A');
  });
});

describe('names an earlier release could not have written raw', () => {
  it('are read from their encoded folder only', () => {
    expect(databaseFolders('a\\b')).toEqual(['a%5Cb']);
    expect(databaseFolders('tab\there')).toEqual(['tab%09here']);
    expect(parseDataKey('a\\b/a\\b_20261124_200857.sql.gz')).toBeUndefined();
  });
});
