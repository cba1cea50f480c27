// DB_SSL_MODE against real servers: one that accepts TLS only (self-signed CA made with openssl),
// and the shared harness server, which has no TLS. Each mode must mean what it means in libpq.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SslMode } from '../../src/config/fields.js';
import { DbPool } from '../../src/db/pool.js';
import { classify, explainConnectionError } from '../../src/db/sqlstate.js';
import { effectiveSslMode, planTransport } from '../../src/db/tls.js';
import type { LocalCluster } from '../../src/embedded/local-cluster.js';
import { createLogger } from '../../src/log/logger.js';
import { adminUrl, startPrivateCluster } from '../support/postgres.js';
import { makeTestPki, type TestPki } from '../support/tls.js';

const logger = createLogger({ level: 'silent', format: 'json' });
let pki: TestPki;
let tlsOnly: LocalCluster;

beforeAll(async () => {
  pki = makeTestPki();
  tlsOnly = await startPrivateCluster({
    files: { 'server.crt': pki.serverCert, 'server.key': pki.serverKey },
    settings: { ssl: 'on', ssl_cert_file: "'server.crt'", ssl_key_file: "'server.key'" },
    hba: [
      'local all all scram-sha-256',
      'hostssl all all 127.0.0.1/32 scram-sha-256',
      'hostssl all all ::1/128 scram-sha-256',
    ],
  });
});
afterAll(async () => {
  await tlsOnly?.stop();
});

function pool(url: string, mode: SslMode, extra: { ca?: string; reject?: boolean } = {}) {
  return new DbPool(
    {
      url,
      ssl: { mode, rejectUnauthorized: extra.reject ?? true, rootCertFile: extra.ca },
      pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 },
    },
    { name: 'test', logger },
  );
}

/** Connects and reports whether the session is encrypted. */
async function encrypted(p: DbPool): Promise<boolean> {
  try {
    const r = await p.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return r.rows[0]!.ssl;
  } finally {
    await p.stop();
  }
}

async function failure(p: DbPool): Promise<unknown> {
  try {
    await p.query('SELECT 1');
  } catch (err) {
    return err;
  } finally {
    await p.stop();
  }
  throw new Error('expected the connection to fail');
}

const byHost = (host: string) => {
  const u = new URL(tlsOnly.url());
  u.hostname = host;
  return u.toString();
};

describe('DB_SSL_MODE against a TLS-only server', () => {
  it('verify-full accepts the right CA and host name', async () => {
    const p = pool(byHost('localhost'), 'verify-full', { ca: pki.caFile });
    expect(p.verified).toBe(true);
    expect(await encrypted(p)).toBe(true);
  });

  it('verify-full rejects a certificate from the wrong CA', async () => {
    const err = await failure(pool(byHost('localhost'), 'verify-full', { ca: pki.wrongCaFile }));
    expect(classify(err).kind).toBe('tls');
  });

  it('verify-full rejects a wrong host name (the certificate names localhost, we dial 127.0.0.1)', async () => {
    const err = await failure(pool(byHost('127.0.0.1'), 'verify-full', { ca: pki.caFile }));
    expect((err as { code?: string }).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(classify(err).kind).toBe('tls');
  });

  it('verify-full with the system CA store rejects a private CA', async () => {
    const err = await failure(pool(byHost('localhost'), 'verify-full'));
    expect(classify(err).kind).toBe('tls');
  });

  it('verify-ca checks the chain but not the host name', async () => {
    expect(await encrypted(pool(byHost('127.0.0.1'), 'verify-ca', { ca: pki.caFile }))).toBe(true);
    const err = await failure(pool(byHost('127.0.0.1'), 'verify-ca', { ca: pki.wrongCaFile }));
    expect(classify(err).kind).toBe('tls');
  });

  it('DB_SSL_REJECT_UNAUTHORIZED=false turns verification off (encrypted, unverified)', async () => {
    const p = pool(byHost('localhost'), 'verify-full', { ca: pki.wrongCaFile, reject: false });
    expect(p.verified).toBe(false);
    expect(await encrypted(p)).toBe(true);
  });

  it('require encrypts without verifying; with a root cert it verifies the chain, as libpq does', async () => {
    const p = pool(byHost('127.0.0.1'), 'require');
    expect(p.verified).toBe(false);
    expect(await encrypted(p)).toBe(true);
    const err = await failure(pool(byHost('127.0.0.1'), 'require', { ca: pki.wrongCaFile }));
    expect(classify(err).kind).toBe('tls');
  });

  it('prefer uses TLS when the server has it', async () => {
    expect(await encrypted(pool(byHost('127.0.0.1'), 'prefer'))).toBe(true);
  });

  it('allow tries plaintext, and falls back to TLS when pg_hba.conf demands it', async () => {
    expect(await encrypted(pool(byHost('127.0.0.1'), 'allow'))).toBe(true);
  });

  it('disable never uses TLS, so a hostssl-only server refuses it', async () => {
    const err = await failure(pool(byHost('127.0.0.1'), 'disable'));
    expect(classify(err)).toMatchObject({ kind: 'auth_failed', code: '28000' });
    expect((err as Error).message).toMatch(/no encryption/);
  });
});

describe('DB_SSL_MODE against a server without TLS', () => {
  it('prefer falls back to plaintext', async () => {
    expect(await encrypted(pool(adminUrl(), 'prefer'))).toBe(false);
  });

  it('allow and disable use plaintext', async () => {
    expect(await encrypted(pool(adminUrl(), 'allow'))).toBe(false);
    expect(await encrypted(pool(adminUrl(), 'disable'))).toBe(false);
  });

  it('require, verify-ca and verify-full refuse to go on without TLS', async () => {
    for (const mode of ['require', 'verify-ca', 'verify-full'] as const) {
      const err = await failure(pool(adminUrl(), mode, { ca: pki.caFile }));
      expect((err as Error).message).toMatch(/does not support SSL/);
      expect(classify(err).kind).toBe('tls');
    }
  });
});

describe('DB_SSL_MODE unset (the built-in verify-full): prefer for a local server only', () => {
  const defaulted = (url: string) =>
    new DbPool(
      {
        url,
        ssl: { mode: 'verify-full', rejectUnauthorized: true, modeDefaulted: true },
        pool: { min: 0, max: 2, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 },
      },
      { name: 'test', logger },
    );

  it('a local server without TLS: plaintext; one with TLS: encrypted (unverified, as prefer)', async () => {
    expect(await encrypted(defaulted(adminUrl()))).toBe(false);
    const p = defaulted(byHost('localhost'));
    expect(p.verified).toBe(false);
    expect(await encrypted(p)).toBe(true);
  });

  it('concurrent first calls all succeed: those that failed on TLS retry on the transport the first switched to', async () => {
    for (const ssl of [
      { mode: 'verify-full' as const, rejectUnauthorized: true, modeDefaulted: true },
      { mode: 'prefer' as const, rejectUnauthorized: true },
    ]) {
      const p = new DbPool(
        { url: adminUrl(), ssl, pool: { min: 0, max: 5, idleTimeoutMs: 1000, acquireTimeoutMs: 5000 } },
        { name: 'test', logger },
      );
      try {
        const results = await Promise.allSettled(Array.from({ length: 5 }, () => p.query('SELECT 1')));
        expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).toEqual(
          Array(5).fill('ok'),
        );
      } finally {
        await p.stop();
      }
    }
  });

  it('a refused password after the fallback still says where it came from', async () => {
    const u = new URL(adminUrl());
    u.password = 'wrong';
    const err = await failure(defaulted(u.toString()));
    expect((err as { code?: string }).code).toBe('28P01');
    expect(explainConnectionError(err, 'db').message).toMatch(
      /\(the password came from the connection URL\)/,
    );
  });

  it('any other host keeps verify-full; a mode that was set is kept for a local host too', () => {
    const plan = (host: string, modeDefaulted: boolean) =>
      planTransport({ mode: 'verify-full', rejectUnauthorized: true, modeDefaulted }, host);
    expect(plan('db.internal', true)).toMatchObject({ verified: true });
    expect(plan('db.internal', true).fallback).toBeUndefined();
    expect(plan('10.0.0.5', true)).toMatchObject({ verified: true });
    expect(plan('127.0.0.1', false)).toMatchObject({ verified: true });
    expect(plan('127.0.0.1', true)).toMatchObject({ verified: false, fallback: false });
    expect(plan('::1', true)).toMatchObject({ verified: false, fallback: false });
    expect(effectiveSslMode({ mode: 'verify-full', modeDefaulted: true }, '/run/pg')).toBe('prefer');
  });
});
