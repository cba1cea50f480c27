// Which environment variables get the "not a setting" warning, and which are other software's.
import { describe, expect, it } from 'vitest';
import { describeUnknownVariable, unknownEnvironment } from '../../src/config/env-names.js';
import { isLocalHost } from '../../src/config/ssl-mode.js';

const names = (env: Record<string, string>) => unknownEnvironment(env).map((v) => v.name);

describe('unknown environment variables', () => {
  it("warns for a setting's typo, with the setting it meant", () => {
    const [v] = unknownEnvironment({ BACKUP_SHEDULE: '0 3 * * *' });
    expect(v).toEqual({ name: 'BACKUP_SHEDULE', suggestion: 'BACKUP_SCHEDULE' });
    expect(describeUnknownVariable(v!)).toContain('did you mean BACKUP_SCHEDULE?');
  });

  it('leaves alone what other software sets: proxies, platforms, Kubernetes and Docker links', () => {
    expect(
      names({
        HTTP_PROXY: 'x',
        WEB_CONCURRENCY: '2',
        DATABASE_URL_UNPOOLED: 'x',
        METRICS_SERVICE_HOST: '10.0.0.1',
        METRICS_PORT_9187_TCP_ADDR: '10.0.0.1',
        DB_ENV_POSTGRES_PASSWORD: 'x',
        PG_MAJOR: '16',
        PGPASSWORD: 'x',
        lowercase_backup: 'x',
      }),
    ).toEqual([]);
  });

  it("leaves a Docker link's NAME alone when the link's other variables are there", () => {
    expect(
      names({ DB_NAME: '/app/db', DB_PORT: 'tcp://172.17.0.2:5432', DB_PORT_5432_TCP_ADDR: '172.17.0.2' }),
    ).toEqual([]);
    expect(names({ DB_NAME: 'app' })).toEqual(['DB_NAME']); // no link: someone meant the database
  });

  it('says how the connection is given to one who sets its parts, instead of a wrong "did you mean"', () => {
    const vs = unknownEnvironment({ DB_HOST: 'db', DATABASE_USER: 'app', DB_PASSWORD: 'secret' });
    expect(vs.map((v) => v.name)).toEqual(['DATABASE_USER', 'DB_HOST', 'DB_PASSWORD']);
    for (const v of vs) {
      expect(v.suggestion).toBeUndefined();
      const text = describeUnknownVariable(v);
      expect(text).toContain('DATABASE_URL (or DATABASE_URL_FILE)');
      expect(text).not.toContain('secret'); // values are never read
    }
  });
});

describe('a local host (DB_SSL_MODE unset: prefer)', () => {
  it('is a socket folder, localhost, 127.0.0.0/8 or ::1, and nothing that only looks like one', () => {
    for (const h of ['/run/postgresql', 'localhost', 'LOCALHOST', '127.0.0.1', '127.1.2.3', '::1', '[::1]'])
      expect(isLocalHost(h), h).toBe(true);
    for (const h of [
      'localhost.evil.com',
      '127.0.0.1.nip.io',
      '127.999.999.999',
      '0x7f000001',
      '::ffff:127.0.0.1',
      'db.internal',
      '10.0.0.5',
      'localhost,db.example.com',
    ])
      expect(isLocalHost(h), h).toBe(false);
  });
});
