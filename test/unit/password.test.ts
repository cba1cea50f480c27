// The passfile as libpq reads it: the first matching line wins, * matches anything, \: and \\ escape.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultUser, findPassword, matchPassfile } from '../../src/db/password.js';
import type { ConnectionTarget } from '../../src/core/database-url.js';

const target: ConnectionTarget = {
  host: 'db.internal',
  port: 5432,
  user: 'app',
  password: undefined,
  database: 'appdb',
};
const dir = mkdtempSync(join(tmpdir(), 'pgmaintd-passfile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('passfile', () => {
  it('the first matching line wins; * matches any value; comments are skipped', () => {
    const text = [
      '# comment: db.internal:5432:appdb:app:not-this',
      'other.internal:5432:*:app:wrong-host',
      'db.internal:5433:*:app:wrong-port',
      'db.internal:5432:*:app:first',
      '*:*:*:*:second',
    ].join('\n');
    expect(matchPassfile(text, target)).toBe('first');
    expect(matchPassfile(text, { ...target, user: 'other' })).toBe('second');
    expect(matchPassfile('db.internal:5432:appdb:app\n', target)).toBeUndefined(); // 4 fields
  });

  it('\\: and \\\\ stand for a colon and a backslash, in any field', () => {
    expect(matchPassfile('db.internal:5432:appdb:app:pa\\:ss\\\\word\n', target)).toBe('pa:ss\\word');
    expect(matchPassfile('\\:\\:1:5432:*:*:v6\n', { ...target, host: '::1' })).toBe('v6');
  });

  it('the default socket folder of the Debian libpq pg-maintd runs matches "localhost", as in libpq', () => {
    expect(matchPassfile('localhost:5432:*:*:sock\n', { ...target, host: '/var/run/postgresql' })).toBe(
      'sock',
    );
    // upstream's default, not Debian's: Debian's pg_dump would not find this line for /tmp
    expect(matchPassfile('localhost:5432:*:*:sock\n', { ...target, host: '/tmp' })).toBeUndefined();
    expect(matchPassfile('/tmp:5432:*:*:tmp\n', { ...target, host: '/tmp' })).toBe('tmp');
    // libpq compares the path as written: no build has /run/postgresql as its default
    expect(
      matchPassfile('localhost:5432:*:*:sock\n', { ...target, host: '/run/postgresql' }),
    ).toBeUndefined();
    expect(matchPassfile('/run/postgresql:5432:*:*:dir\n', { ...target, host: '/run/postgresql' })).toBe(
      'dir',
    );
  });

  it('a URL without a user matches the line of PGUSER, else of the operating system user', () => {
    const text = [
      'db.internal:5432:appdb:pguser:from-pguser',
      `db.internal:5432:appdb:${userInfo().username}:os`,
    ].join('\n');
    const noUser = { ...target, user: undefined };
    expect(matchPassfile(text, noUser, { PGUSER: 'pguser' })).toBe('from-pguser');
    expect(matchPassfile(text, noUser, {})).toBe('os');
    expect(defaultUser({ PGUSER: 'pguser' })).toBe('pguser');
    expect(defaultUser({})).toBe(userInfo().username);
    const file = join(dir, 'pgpass-users');
    writeFileSync(file, text);
    chmodSync(file, 0o600);
    expect(findPassword(noUser, { PGUSER: 'nobody', PGPASSFILE: file })).toEqual({
      problem: `the passfile ${file} has no line for db.internal:5432:appdb:nobody`,
    });
  });

  it('the password ends at an unescaped colon; the rest of the line is ignored', () => {
    expect(matchPassfile('db.internal:5432:appdb:app:secret:ignored\n', target)).toBe('secret');
    expect(matchPassfile('db.internal:5432:appdb:app:a\\:b:c\n', target)).toBe('a:b');
    expect(matchPassfile('db.internal:5432:appdb:app:\n', target)).toBe('');
  });

  it('only a bare * is a wildcard: \\* is a literal asterisk', () => {
    expect(matchPassfile('db.internal:5432:\\*:app:escaped\n', target)).toBeUndefined();
    expect(matchPassfile('db.internal:5432:\\*:app:escaped\n', { ...target, database: '*' })).toBe('escaped');
    expect(matchPassfile('db.internal:5432:**:app:double\n', target)).toBeUndefined();
    expect(matchPassfile('db.internal:5432:*:app:bare\n', target)).toBe('bare');
  });

  it('the URL, then PGPASSWORD, then the passfile; one others may read is ignored, saying why', () => {
    const file = join(dir, 'pgpass');
    writeFileSync(file, 'db.internal:5432:*:app:from-file\n');
    chmodSync(file, 0o600);
    expect(findPassword({ ...target, password: 'in-url' }, { PGPASSFILE: file })).toEqual({
      password: 'in-url',
      source: 'the connection URL',
    });
    expect(findPassword(target, { PGPASSWORD: 'env', PGPASSFILE: file })).toMatchObject({
      source: 'PGPASSWORD',
    });
    expect(findPassword(target, { PGPASSFILE: file })).toEqual({
      password: 'from-file',
      source: `the passfile ${file}`,
    });
    expect(findPassword({ ...target, user: 'nobody' }, { PGPASSFILE: file })).toEqual({
      problem: `the passfile ${file} has no line for db.internal:5432:appdb:nobody`,
    });
    chmodSync(file, 0o640);
    expect(findPassword(target, { PGPASSFILE: file })).toEqual({
      problem: `the passfile ${file} is ignored because group or others may read it: chmod 600 ${file}`,
    });
    expect(findPassword(target, { PGPASSFILE: join(dir, 'missing') })).toEqual({});
  });
});
