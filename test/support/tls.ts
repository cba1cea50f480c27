/**
 * Test certificates made with the real openssl: a CA, a server certificate for localhost, and a
 * stranger CA; issueCert() makes more (server certificates for 127.0.0.1, client certificates).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp.js';

export interface TestPki {
  dir: string;
  caFile: string;
  wrongCaFile: string;
  serverCert: string;
  serverKey: string;
}

export function makeTestPki(): TestPki {
  const dir = tempDir('pgmaintd-pki-');
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  for (const name of ['ca', 'wrong-ca']) {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=pg-maintd test ${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
    );
  }
  ssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=localhost',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
  );
  // Only the DNS name: connecting by IP address must fail the host-name check of verify-full.
  const ext = join(dir, 'ext.cnf');
  execFileSync('sh', ['-c', `printf 'subjectAltName=DNS:localhost\\n' > ${ext}`]);
  ssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    ext,
    '-out',
    'server.pem',
  );
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    wrongCaFile: join(dir, 'wrong-ca.pem'),
    serverCert: readFileSync(join(dir, 'server.pem'), 'utf8'),
    serverKey: readFileSync(join(dir, 'server.key'), 'utf8'),
  };
}

export interface IssuedCert {
  certFile: string;
  keyFile: string;
}

/**
 * Issues a certificate (EC P-256) signed by the test CA, or by the stranger CA: by default a server
 * certificate for localhost and 127.0.0.1; `client: true` makes a client certificate.
 */
export function issueCert(
  pki: TestPki,
  name: string,
  opts: { san?: string; client?: boolean; signer?: 'ca' | 'wrong-ca' } = {},
): IssuedCert {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki.dir, stdio: 'pipe' });
  const signer = opts.signer ?? 'ca';
  const ext = join(pki.dir, `${name}.ext`);
  writeFileSync(
    ext,
    `subjectAltName=${opts.san ?? 'DNS:localhost,IP:127.0.0.1'}\nextendedKeyUsage=${opts.client ? 'clientAuth' : 'serverAuth'}\n`,
  );
  ssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
  );
  ssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${signer}.pem`,
    '-CAkey',
    `${signer}.key`,
    '-set_serial',
    `0x${randomBytes(8).toString('hex')}`,
    '-days',
    '2',
    '-extfile',
    ext,
    '-out',
    `${name}.pem`,
  );
  return { certFile: join(pki.dir, `${name}.pem`), keyFile: join(pki.dir, `${name}.key`) };
}
