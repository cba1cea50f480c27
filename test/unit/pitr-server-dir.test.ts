// The restored server's data directory reaches pg_ctl -o, a shell command line, and holds the Unix
// socket pg-maintd follows recovery through: a path that needs quoting, or too long for a socket, is
// refused up front with a message saying why.
import { describe, expect, it } from 'vitest';
import { OperatorError } from '../../src/core/errors.js';
import { checkServerDataDir } from '../../src/pitr/recovery-server.js';

describe('checkServerDataDir', () => {
  it('accepts a plain absolute path', () => {
    expect(() => checkServerDataDir('/var/lib/postgresql/restore-1.2_a+b')).not.toThrow();
  });

  it.each(['/tmp/a b', '/tmp/x;touch /tmp/pwned', '/tmp/$(id)', "/tmp/q'uote", 'relative/dir', '/tmp/é'])(
    'refuses %j, naming the allowed characters',
    (dir) => {
      let err: unknown;
      try {
        checkServerDataDir(dir);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(OperatorError);
      expect((err as OperatorError).message).toContain('characters outside');
    },
  );

  it('refuses a path too long for the Unix socket', () => {
    expect(() => checkServerDataDir(`/tmp/${'d'.repeat(100)}`)).toThrow(/Unix socket/);
  });
});
