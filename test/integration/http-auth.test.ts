// Protection of the HTTP endpoints with an exporter-toolkit web config and a bearer token: a real
// HttpServer over real TLS (test PKI made with openssl), real bcrypt, real files changed at runtime.
import { mkdtempSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import bcrypt from 'bcryptjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { HttpServer } from '../../src/http/server.js';
import type { WebFiles } from '../../src/http/web-config.js';
import { createLogger } from '../../src/log/logger.js';
import { createRegistry } from '../../src/metrics/registry.js';
import { issueCert, makeTestPki, type IssuedCert, type TestPki } from '../support/tls.js';
import { renderConfig } from '../../src/cli/check-config.js';
import { preflight } from '../../src/cli/preflight.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { spawnCli, startDaemon, waitFor } from '../support/daemon.js';
import { basicAuth, serveHttp } from '../support/http.js';
import { useTestDatabase } from '../support/postgres.js';
import { tempDir } from '../support/temp.js';

const USER = 'prometheus';
const PASSWORD = 'correct horse battery staple';
const TOKEN = 'tok-3f9a1c0d7e5b42a8b6d1f0e9c8a7b6d5';
const basic = basicAuth;

let pki: TestPki;
let serverCert: IssuedCert;
let rotatedCert: IssuedCert;
let clientCert: IssuedCert;
let strangerCert: IssuedCert;
let hash: string;
let dir: string;

beforeAll(() => {
  pki = makeTestPki();
  serverCert = issueCert(pki, 'web');
  rotatedCert = issueCert(pki, 'web-rotated');
  clientCert = issueCert(pki, 'scraper', { client: true, san: 'DNS:scraper.example' });
  strangerCert = issueCert(pki, 'stranger', { client: true, san: 'DNS:scraper.example', signer: 'wrong-ca' });
  hash = bcrypt.hashSync(PASSWORD, 10);
  dir = tempDir('http-auth-');
});

let servers: HttpServer[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  servers = [];
});

interface Setup {
  basic?: boolean;
  token?: boolean;
  tls?: boolean;
  clientAuth?: string;
  extra?: Record<string, unknown>;
}

/** Writes the web config (relative cert paths, as exporter-toolkit resolves them) and the token file. */
function writeFiles(s: Setup, into = mkdtempSync(join(dir, 'case-'))): WebFiles {
  const doc: Record<string, unknown> = { ...s.extra };
  if (s.tls) {
    copyFileSync(serverCert.certFile, join(into, 'tls.crt'));
    copyFileSync(serverCert.keyFile, join(into, 'tls.key'));
    copyFileSync(pki.caFile, join(into, 'ca.crt'));
    doc.tls_server_config = {
      cert_file: 'tls.crt',
      key_file: 'tls.key',
      ...(s.clientAuth ? { client_auth_type: s.clientAuth, client_ca_file: 'ca.crt' } : {}),
    };
  }
  // a web config without users must say so (a file cut short would not)
  doc.basic_auth_users = s.basic ? { [USER]: hash } : {};
  const files: WebFiles = {};
  if (s.tls || s.basic || s.extra) {
    files.configFile = join(into, 'web-config.yml');
    writeFileSync(files.configFile, toYaml(doc));
  }
  if (s.token) {
    files.bearerTokenFile = join(into, 'token');
    writeFileSync(files.bearerTokenFile, `  ${TOKEN}\n`);
  }
  return files;
}

async function serve(web: WebFiles) {
  const { server, port, logText } = await serveHttp({ web });
  servers.push(server);
  return { server, port, logs: logText };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
  peer?: string;
}
interface Client {
  auth?: string;
  cert?: IssuedCert;
  method?: string;
}

/** One request on a fresh connection (no keep-alive: a reload must show on the next connection). */
function request(port: number, path: string, tls: boolean, c: Client = {}): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = {
      host: '127.0.0.1',
      port,
      path,
      method: c.method ?? 'GET',
      agent: false,
      headers: c.auth === undefined ? {} : { authorization: c.auth },
    };
    if (tls) {
      opts.ca = readFileSync(pki.caFile);
      if (c.cert) {
        opts.cert = readFileSync(c.cert.certFile);
        opts.key = readFileSync(c.cert.keyFile);
      }
    }
    const req = (tls ? https : http).request(opts, (res) => {
      let body = '';
      const peer = tls ? (res.socket as TLSSocket).getPeerCertificate().fingerprint256 : undefined;
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body, ms: performance.now() - t0, peer }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const CASES: Array<[string, Setup]> = [
  ['no protection', {}],
  ['basic auth', { basic: true }],
  ['bearer token', { token: true }],
  ['basic auth and bearer token', { basic: true, token: true }],
  ['TLS', { tls: true }],
  ['TLS and basic auth', { tls: true, basic: true }],
  ['TLS and bearer token', { tls: true, token: true }],
  ['TLS, basic auth and bearer token', { tls: true, basic: true, token: true }],
  ['TLS with RequireAndVerifyClientCert', { tls: true, clientAuth: 'RequireAndVerifyClientCert' }],
];

describe('HTTP endpoint protection', () => {
  for (const [name, setup] of CASES) {
    it(`${name}: probes open, /metrics only with the right credentials`, async () => {
      const { port, logs } = await serve(writeFiles(setup));
      const tls = !!setup.tls;
      const cert = setup.clientAuth ? clientCert : undefined;
      const get = (path: string, auth?: string, method?: string) =>
        request(port, path, tls, { auth, cert, method });

      for (const probe of ['/healthz', '/readyz']) expect((await get(probe)).status).toBe(200);

      const good = [
        ...(setup.basic ? [basic(USER, PASSWORD)] : []),
        ...(setup.token ? [`Bearer ${TOKEN}`] : []),
      ];
      if (good.length === 0) {
        const m = await get('/metrics');
        expect(m.status).toBe(200);
        expect(m.body).toContain('pgmaintd_build_info');
        const landing = await get('/');
        expect(landing.status).toBe(200);
        expect(landing.headers['content-type']).toBe('text/html; charset=utf-8');
        for (const path of ['metrics', 'healthz', 'readyz']) expect(landing.body).toContain(`href="${path}"`);
      } else {
        const bad = [
          undefined, // no header
          basic('nobody', PASSWORD), // unknown user
          basic(USER, 'wrong password'), // wrong password
          `Bearer ${TOKEN.slice(0, -1)}x`, // wrong token of the same length
          'Bearer short', // wrong token of another length
          'Basic !!!not-base64', // malformed
          `Basic ${Buffer.from('no-colon').toString('base64')}`, // malformed
          'Digest username="x"', // another scheme
          'Bearer', // no token
        ];
        const denials = await Promise.all(bad.map((auth) => get('/metrics', auth)));
        for (const d of denials) {
          expect(d.status).toBe(401);
          expect(d.body).toBe('Unauthorized\n');
          expect(d.headers['www-authenticate']).toEqual(denials[0]!.headers['www-authenticate']);
        }
        const challenge = String(denials[0]!.headers['www-authenticate']);
        expect(challenge.includes('Basic realm="pg-maintd"')).toBe(!!setup.basic);
        expect(challenge.includes('Bearer realm="pg-maintd"')).toBe(!!setup.token);
        expect((await get('/metrics', undefined, 'HEAD')).status).toBe(401);
        expect((await get('/nowhere')).status).toBe(401); // deny by default, not by path text
        expect((await get('/')).status).toBe(401); // the landing page is behind the credentials too
        expect((await get('/', good[0])).body).toContain('href="metrics"');
        for (const auth of good) {
          const m = await get('/metrics', auth);
          expect(m.status, auth).toBe(200);
          expect(m.body).toContain('pgmaintd_build_info');
        }
        // either credential works when both are configured; later scrapes skip bcrypt (cached)
        if (setup.basic) {
          const again: number[] = [];
          for (let i = 0; i < 3; i++) again.push((await get('/metrics', basic(USER, PASSWORD))).ms);
          expect(median(again)).toBeLessThan(50);
        }
      }

      if (tls) {
        // plain HTTP to the TLS port gets no metrics
        await expect(request(port, '/metrics', false, { auth: good[0] })).rejects.toThrow();
      }
      if (setup.clientAuth) {
        // no client certificate, or one from another CA: refused at the handshake
        await expect(request(port, '/healthz', true)).rejects.toThrow();
        await expect(request(port, '/healthz', true, { cert: strangerCert })).rejects.toThrow();
      }
      const log = logs();
      for (const secret of [PASSWORD, TOKEN, hash, Buffer.from(`${USER}:${PASSWORD}`).toString('base64')])
        expect(log).not.toContain(secret);
      expect(log).not.toContain('wrong password');
    });
  }

  it('unknown user and wrong password take the same time (dummy bcrypt hash); tokens too', async () => {
    const { port } = await serve(writeFiles({ basic: true, token: true }));
    const unknown: number[] = [];
    const wrong: number[] = [];
    for (let i = 0; i < 30; i++) {
      unknown.push((await request(port, '/metrics', false, { auth: basic(`nobody${i}`, 'guess') })).ms);
      wrong.push((await request(port, '/metrics', false, { auth: basic(USER, `guess${i}`) })).ms);
    }
    const bcryptMs = median(wrong);
    expect(bcryptMs).toBeGreaterThan(20); // bcrypt cost 10 does run for a wrong password
    expect(
      Math.abs(median(unknown) - bcryptMs),
      `unknown ${median(unknown)} ms, wrong ${bcryptMs} ms`,
    ).toBeLessThan(bcryptMs * 0.25);

    const sameLength: number[] = [];
    const otherLength: number[] = [];
    for (let i = 0; i < 30; i++) {
      sameLength.push(
        (await request(port, '/metrics', false, { auth: `Bearer ${'x'.repeat(TOKEN.length)}` })).ms,
      );
      otherLength.push((await request(port, '/metrics', false, { auth: `Bearer ${'x'.repeat(300)}` })).ms);
    }
    expect(Math.abs(median(sameLength) - median(otherLength))).toBeLessThan(3);
  });

  it('RequireAnyClientCert, VerifyClientCertIfGiven and client_allowed_sans', async () => {
    const files = (clientAuth: string, extra: Record<string, unknown> = {}) => {
      const f = writeFiles({ tls: true, clientAuth });
      const doc = {
        tls_server_config: {
          cert_file: 'tls.crt',
          key_file: 'tls.key',
          client_auth_type: clientAuth,
          ...extra,
        },
        basic_auth_users: {},
      };
      writeFileSync(f.configFile!, toYaml(doc));
      return f;
    };
    const any = await serve(files('RequireAnyClientCert'));
    await expect(request(any.port, '/healthz', true)).rejects.toThrow();
    expect((await request(any.port, '/healthz', true, { cert: strangerCert })).status).toBe(200);

    const ifGiven = await serve(files('VerifyClientCertIfGiven', { client_ca_file: 'ca.crt' }));
    expect((await request(ifGiven.port, '/healthz', true)).status).toBe(200);
    expect((await request(ifGiven.port, '/healthz', true, { cert: clientCert })).status).toBe(200);
    await expect(request(ifGiven.port, '/healthz', true, { cert: strangerCert })).rejects.toThrow();

    const sans = (allowed: string) =>
      files('RequireAndVerifyClientCert', { client_ca_file: 'ca.crt', client_allowed_sans: [allowed] });
    const allowed = await serve(sans('scraper.example'));
    expect((await request(allowed.port, '/healthz', true, { cert: clientCert })).status).toBe(200);
    const other = await serve(sans('other.example'));
    await expect(request(other.port, '/healthz', true, { cert: clientCert })).rejects.toThrow();
  });

  it('applies http_server_config.headers to every answer, 401s included', async () => {
    const { port } = await serve(
      writeFiles({
        basic: true,
        extra: {
          http_server_config: {
            http2: true,
            headers: { 'X-Frame-Options': 'deny', 'Strict-Transport-Security': 'max-age=31536000' },
          },
        },
      }),
    );
    for (const path of ['/healthz', '/metrics']) {
      const r = await request(port, path, false);
      expect(r.headers['x-frame-options']).toBe('deny');
      expect(r.headers['strict-transport-security']).toBe('max-age=31536000');
    }
  });

  it('re-reads changed users, token and certificates without a restart; an invalid edit keeps the last good settings', async () => {
    const caseDir = mkdtempSync(join(dir, 'reload-'));
    const web = writeFiles({ tls: true, basic: true, token: true }, caseDir);
    const { port, logs } = await serve(web);
    const get = (auth?: string) => request(port, '/metrics', true, { auth });
    const first = await get(basic(USER, PASSWORD));
    expect(first.status).toBe(200);

    // a new user replaces the old one; the token rotates; cert-manager renews the certificate
    const newHash = bcrypt.hashSync('new password', 10);
    const doc = {
      tls_server_config: { cert_file: 'tls.crt', key_file: 'tls.key' },
      basic_auth_users: { grafana: newHash },
    };
    writeFileSync(web.configFile!, toYaml(doc));
    writeFileSync(web.bearerTokenFile!, 'rotated-token\n');
    copyFileSync(rotatedCert.certFile, join(caseDir, 'tls.crt'));
    copyFileSync(rotatedCert.keyFile, join(caseDir, 'tls.key'));
    const after = await waitFor(
      () => get(basic('grafana', 'new password')),
      (r) => r.status === 200 && r.peer !== first.peer,
      10_000,
      200,
    );
    expect(after.peer).not.toBe(first.peer);
    expect((await get(basic(USER, PASSWORD))).status).toBe(401);
    expect((await get(`Bearer ${TOKEN}`)).status).toBe(401);
    expect((await get('Bearer rotated-token')).status).toBe(200);
    expect(logs()).toContain('web config reloaded');

    // broken edits: bad YAML, then a missing certificate, then a plain password for a hash
    for (const broken of [
      'basic_auth_users: [oops\n',
      toYaml({ ...doc, tls_server_config: { cert_file: 'gone.crt', key_file: 'tls.key' } }),
      toYaml({ ...doc, basic_auth_users: { grafana: 'plain-text-password' } }),
      // names that pass a naive `in` lookup and make OpenSSL throw when applied
      toYaml({
        ...doc,
        tls_server_config: { ...(doc.tls_server_config as object), cipher_suites: ['constructor'] },
      }),
    ]) {
      const before = logs().split('web config change rejected').length;
      writeFileSync(web.configFile!, broken);
      await waitFor(
        async () => logs().split('web config change rejected').length,
        (n) => n > before,
        5000,
        100,
      );
      const still = await get(basic('grafana', 'new password'));
      expect(still.status).toBe(200);
      expect(still.peer).toBe(after.peer);
      expect((await get()).status).toBe(401);
    }
    expect(logs()).not.toContain('plain-text-password');
    expect(logs()).not.toContain('rotated-token');
  });

  it('refuses to start on an invalid web config, naming the file and the key (exit 78)', () => {
    const web = writeFiles({ tls: true });
    writeFileSync(web.configFile!, toYaml({ tls_server_config: { cert_file: 'tls.crt' } }));
    try {
      new HttpServer({
        host: '127.0.0.1',
        port: 0,
        registry: createRegistry(),
        logger: createLogger({ level: 'silent', format: 'json' }),
        liveness: {},
        readiness: () => ({ ready: true, since: '' }),
        web,
      });
      expect.unreachable();
    } catch (err) {
      expect((err as { exitCode: number }).exitCode).toBe(78);
      expect((err as Error).message).toContain(web.configFile);
      expect((err as Error).message).toContain('tls_server_config.key_file');
    }
  });
});

describe('web config checked before any command runs (the preflight after loading)', () => {
  const noDefaults = tempDir('cfg-none-');
  const load = (env: Record<string, string>) =>
    preflight(
      loadConfig({
        defaultsDir: noDefaults,
        env: { DATABASE_URL: 'postgresql://app@db.internal/app', ...env },
      }),
    );
  const problemText = (env: Record<string, string>) => {
    try {
      load(env);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).exitCode).toBe(78);
      return (err as ConfigError).describe();
    }
    throw new Error('expected a ConfigError');
  };
  const webFile = (doc: unknown) => {
    const f = writeFiles({ tls: true });
    writeFileSync(f.configFile!, typeof doc === 'string' ? doc : toYaml(doc));
    return f.configFile!;
  };

  const INVALID: Array<[string, unknown, string[]]> = [
    [
      'a missing certificate file',
      { tls_server_config: { cert_file: 'nope.crt', key_file: 'tls.key' } },
      ['tls_server_config.cert_file', 'nope.crt: no such file'],
    ],
    ['bad YAML', 'tls_server_config: [oops\n', ['a readable web config YAML file']],
    ['an unknown key', { tls_server_confg: {} }, ['"tls_server_confg"', 'did you mean tls_server_config?']],
    [
      'an unknown nested key',
      { tls_server_config: { cert_file: 'tls.crt', key_file: 'tls.key', certfile: 'x' } },
      ['"certfile" in tls_server_config'],
    ],
    [
      'a hash that is not bcrypt',
      { basic_auth_users: { alice: 'hunter2hunter2' } },
      ['basic_auth_users.alice', 'htpasswd -nBC 10'],
    ],
    [
      'a certificate without its key',
      { tls_server_config: { cert_file: 'tls.crt' } },
      ['tls_server_config.key_file'],
    ],
    [
      'a key of another certificate',
      { tls_server_config: { cert_file: 'tls.crt', key_file: 'ca.crt' } },
      ['tls_server_config.key_file', 'private key'],
    ],
    [
      'an unknown client_auth_type',
      { tls_server_config: { cert_file: 'tls.crt', key_file: 'tls.key', client_auth_type: 'Please' } },
      ['tls_server_config.client_auth_type', 'RequireAndVerifyClientCert'],
    ],
    [
      'client CAs without a client auth policy',
      { tls_server_config: { cert_file: 'tls.crt', key_file: 'tls.key', client_ca_file: 'ca.crt' } },
      ['tls_server_config.client_auth_type'],
    ],
    [
      'an unknown TLS version',
      { tls_server_config: { cert_file: 'tls.crt', key_file: 'tls.key', min_version: 'TLS14' } },
      ['tls_server_config.min_version', 'TLS13'],
    ],
    [
      'an unknown cipher suite',
      {
        tls_server_config: {
          cert_file: 'tls.crt',
          key_file: 'tls.key',
          cipher_suites: ['TLS_RSA_WITH_RC4_128_SHA'],
        },
      },
      ['tls_server_config.cipher_suites', 'TLS_RSA_WITH_RC4_128_SHA'],
    ],
    [
      'cipher and curve names that are Object properties (constructor, toString)',
      {
        tls_server_config: {
          cert_file: 'tls.crt',
          key_file: 'tls.key',
          cipher_suites: ['constructor'],
          curve_preferences: ['toString'],
        },
      },
      ['tls_server_config.cipher_suites', 'constructor', 'tls_server_config.curve_preferences', 'toString'],
    ],
    [
      'a header exporter-toolkit does not allow',
      { http_server_config: { headers: { Server: 'x' } } },
      ['"Server" can not be configured'],
    ],
    [
      'a header value exporter-toolkit does not allow',
      { http_server_config: { headers: { 'X-Frame-Options': 'allow' } } },
      ['headers.X-Frame-Options', 'deny, sameorigin'],
    ],
    ['rate_limit', { rate_limit: { burst: 1, interval: '1s' } }, ['no rate_limit']],
  ];
  for (const [what, doc, expected] of INVALID) {
    it(`rejects ${what} with exit 78, naming the file and the key`, () => {
      const file = webFile(doc);
      const text = problemText({ WEB_CONFIG_FILE: file });
      expect(text).toContain('WEB_CONFIG_FILE');
      expect(text).toContain(file);
      for (const e of expected) expect(text).toContain(e);
      expect(text).not.toContain('hunter2hunter2');
      expect(text).not.toContain('BEGIN');
    });
  }

  it('rejects a missing or empty token file without showing a token', () => {
    expect(problemText({ WEB_BEARER_TOKEN_FILE: join(dir, 'no-token') })).toContain('no such file');
    const empty = join(mkdtempSync(join(dir, 'tok-')), 'token');
    writeFileSync(empty, ' \n');
    expect(problemText({ WEB_BEARER_TOKEN_FILE: empty })).toMatch(/WEB_BEARER_TOKEN_FILE.*empty/);
    writeFileSync(empty, 'two words\n');
    const text = problemText({ WEB_BEARER_TOKEN_FILE: empty });
    expect(text).toContain('without spaces');
    expect(text).not.toContain('two words');
  });

  it('keeps the paths, never the contents, in the configuration and check-config', () => {
    const web = writeFiles({ tls: true, basic: true, token: true });
    const loaded = load({ WEB_CONFIG_FILE: web.configFile!, WEB_BEARER_TOKEN_FILE: web.bearerTokenFile! });
    expect(loaded.config.http.web).toEqual(web);
    for (const json of [false, true]) {
      const out = renderConfig(loaded, json);
      expect(out).toContain(web.configFile);
      expect(out).toContain(web.bearerTokenFile);
      expect(out).not.toContain(TOKEN);
      expect(out).not.toContain(hash);
    }
  });
});

describe('pg-maintd (spawned) with a web config', () => {
  const db = useTestDatabase();

  it('check-config exits 78 with one message naming the file and the key, no stack trace', async () => {
    const web = writeFiles({ basic: true });
    writeFileSync(
      web.configFile!,
      toYaml({ basic_auth_users: { alice: 'not-a-hash' }, tls_server_confg: {} }),
    );
    const cli = spawnCli(['check-config'], { DATABASE_URL: db.url, WEB_CONFIG_FILE: web.configFile });
    const { code } = await cli.exited;
    expect(code).toBe(78);
    expect(cli.output()).toContain(web.configFile);
    expect(cli.output()).toContain('basic_auth_users.alice');
    expect(cli.output()).toContain('"tls_server_confg"');
    expect(cli.output()).not.toContain('not-a-hash');
    expect(cli.output()).not.toMatch(/\n\s+at /);
  });

  it('run serves /metrics over TLS to basic auth or the token, probes open', async () => {
    const web = writeFiles({ tls: true, basic: true, token: true });
    const d = await startDaemon({
      DATABASE_URL: db.url,
      DB_SSL_MODE: 'disable',
      WEB_CONFIG_FILE: web.configFile,
      WEB_BEARER_TOKEN_FILE: web.bearerTokenFile,
      BACKUP_DIR: mkdtempSync(join(dir, 'backups-')),
      BACKUP_SCHEDULE: 'off',
      BACKUP_VERIFY_SCHEDULE: 'off',
      MAINTENANCE_SCHEDULE: 'off',
      LOG_LEVEL: 'debug',
    });
    try {
      expect(d.lines().find((l) => l.msg === 'http server listening')).toMatchObject({
        tls: true,
        auth: ['basic', 'bearer'],
      });
      expect((await request(d.port, '/healthz', true)).status).toBe(200);
      await waitFor(
        () => request(d.port, '/readyz', true),
        (r) => r.status === 200,
      );
      expect((await request(d.port, '/metrics', true)).status).toBe(401);
      expect((await request(d.port, '/metrics', true, { auth: basic(USER, 'nope') })).status).toBe(401);
      const m = await request(d.port, '/metrics', true, { auth: basic(USER, PASSWORD) });
      expect(m.status).toBe(200);
      expect(m.body).toContain('pgmaintd_build_info');
      expect((await request(d.port, '/metrics', true, { auth: `Bearer ${TOKEN}` })).status).toBe(200);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
    for (const secret of [PASSWORD, TOKEN, hash]) expect(d.output()).not.toContain(secret);
  });
});
