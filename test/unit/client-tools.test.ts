import { describe, expect, it } from 'vitest';
import { libpqEnv } from '../../src/programs/client-tools.js';
import { parseDatabaseUrl } from '../../src/core/database-url.js';

const target = parseDatabaseUrl('postgresql://app:s3cret@db.internal:6543/appdb');
const ssl = (mode: 'disable' | 'require' | 'verify-ca' | 'verify-full', extra = {}) => ({
  mode,
  rejectUnauthorized: true,
  ...extra,
});

describe('libpq environment for pg_dump, pg_restore and psql', () => {
  it('carries the connection and the password in the environment', () => {
    const env = libpqEnv(target, ssl('disable'));
    expect(env).toMatchObject({
      PGHOST: 'db.internal',
      PGPORT: '6543',
      PGUSER: 'app',
      PGDATABASE: 'appdb',
      PGPASSWORD: 's3cret',
      PGSSLMODE: 'disable',
      PGAPPNAME: 'pg-maintd',
    });
    expect(libpqEnv(target, ssl('disable'), { database: 'other' }).PGDATABASE).toBe('other');
  });

  it('maps the TLS settings to libpq: the verify modes use the system CA store where libpq knows it (16+)', () => {
    expect(libpqEnv(target, ssl('verify-full'), { clientMajor: 17 })).toMatchObject({
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: 'system',
    });
    expect(libpqEnv(target, ssl('verify-ca'), { clientMajor: 15 }).PGSSLROOTCERT).toBeUndefined();
    expect(
      libpqEnv(target, ssl('verify-full', { rootCertFile: '/etc/ca.pem' }), { clientMajor: 17 })
        .PGSSLROOTCERT,
    ).toBe('/etc/ca.pem');
    expect(libpqEnv(target, ssl('verify-full', { rejectUnauthorized: false })).PGSSLMODE).toBe('require');
    expect(libpqEnv(target, ssl('require')).PGSSLROOTCERT).toBeUndefined();
    expect(libpqEnv(target, ssl('verify-full', { certFile: '/c.pem', keyFile: '/k.pem' }))).toMatchObject({
      PGSSLCERT: '/c.pem',
      PGSSLKEY: '/k.pem',
    });
  });

  it('does not pass the daemon’s whole environment on (AWS keys stay out of pg_dump)', () => {
    process.env.AWS_SECRET_ACCESS_KEY = 'not-for-pg-dump';
    try {
      expect(Object.values(libpqEnv(target, ssl('disable')))).not.toContain('not-for-pg-dump');
    } finally {
      delete process.env.AWS_SECRET_ACCESS_KEY;
    }
  });
});
