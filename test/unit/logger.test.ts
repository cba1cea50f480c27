import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, makeScrubber, registerSecret } from '../../src/log/logger.js';

function capture(secrets: string[] = []) {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (d: Buffer) => (out += d.toString()));
  const logger = createLogger({ level: 'trace', format: 'json', secrets, destination: stream });
  return { logger, out: () => out };
}

describe('logger redaction', () => {
  it('redacts password fields, AWS keys and Authorization headers by configuration', () => {
    const { logger, out } = capture();
    logger.info({ password: 'pw-field-1', db: { password: 'pw-nested-2' } }, 'login');
    logger.info(
      { creds: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'aws-secret-3', sessionToken: 'tok-4' } },
      's3',
    );
    logger.info({ req: { headers: { authorization: 'Bearer bearer-5', cookie: 'sid=cookie-6' } } }, 'http');
    logger.info({ env: { PGPASSWORD: 'pgpw-7', AWS_SECRET_ACCESS_KEY: 'aws-env-8' } }, 'child env');
    const text = out();
    for (const secret of [
      'pw-field-1',
      'pw-nested-2',
      'aws-secret-3',
      'tok-4',
      'bearer-5',
      'cookie-6',
      'pgpw-7',
      'aws-env-8',
    ]) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain('AKIAEXAMPLE'); // the key id is not a secret
    expect(text.match(/\*\*\*\*/g)?.length).toBeGreaterThanOrEqual(8);
  });

  it('masks passwords inside URLs anywhere in a line, messages and errors included', () => {
    const { logger, out } = capture();
    logger.warn(
      { url: 'postgresql://app:url-secret-9@db:5432/app' },
      'connecting to postgres://u:msg-secret-10@h/db',
    );
    logger.error({ err: new Error('failed for postgresql://app:err-secret-11@db/app') }, 'boom');
    const text = out();
    expect(text).not.toMatch(/url-secret-9|msg-secret-10|err-secret-11/);
    expect(text).toContain('postgresql://app:****@db:5432/app');
  });

  it('scrubs the literal secret values the configuration holds, wherever they appear', () => {
    const { logger, out } = capture(['lit"eral-secret-12', 'plain-secret-13']);
    logger.info(
      { note: 'a message mentioning plain-secret-13 and lit"eral-secret-12' },
      'free text plain-secret-13',
    );
    expect(out()).not.toMatch(/plain-secret-13|eral-secret-12/);
  });

  it('scrubber keeps ordinary text intact', () => {
    const scrub = makeScrubber(['abc']); // too short to scrub safely
    expect(scrub('abc def')).toBe('abc def');
    expect(makeScrubber([])('postgres://u@h/db and key=value')).toBe('postgres://u@h/db and key=value');
    expect(makeScrubber([])('host=h password=kv-secret user=u')).toBe('host=h password=**** user=u');
  });
});

describe('secrets learned after start-up', () => {
  it('a registered secret (a password DATABASE_URL_FILE rotated to) is scrubbed by every scrubber, old ones too', () => {
    const scrub = makeScrubber(['first-password-1234']);
    expect(scrub('rotated-pw-5678 and first-password-1234')).toBe('rotated-pw-5678 and ****');
    registerSecret('rotated-pw-5678');
    expect(scrub('rotated-pw-5678 and first-password-1234')).toBe('**** and ****');
    expect(makeScrubber([])('"rotated-pw-5678"')).toBe('"****"');
  });
});
