// A web config or token file that is emptied, cut short, deleted or broken while the daemon runs
// keeps the last good credentials in force (logged at error); turning authentication off takes a
// file that says so (`basic_auth_users: {}`, logged at warn). At start, a file that turns no
// authentication on without saying so stops pg-maintd (exit 78). A real HttpServer, real files.
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { preflight } from '../../src/cli/preflight.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { HttpServer } from '../../src/http/server.js';
import type { WebFiles } from '../../src/http/web-config.js';
import { createLogger } from '../../src/log/logger.js';
import { createRegistry } from '../../src/metrics/registry.js';
import { spawnCli } from '../support/daemon.js';
import { basicAuth, request, serveHttp, type ServedHttp } from '../support/http.js';
import { tempDir } from '../support/temp.js';

const USER = 'prometheus';
const PASSWORD = 'reload-pw-7d1c';
const TOKEN = 'reload-token-51aa9e';
let hash: string;
let dir: string;
let served: ServedHttp[] = [];

beforeAll(() => {
  hash = bcrypt.hashSync(PASSWORD, 4);
  dir = tempDir('http-web-reload-');
});
afterEach(async () => {
  await Promise.all(served.map((s) => s.server.stop()));
  served = [];
});

function files(doc: unknown, token?: string): WebFiles {
  const into = mkdtempSync(join(dir, 'case-'));
  const web: WebFiles = { configFile: join(into, 'web-config.yml') };
  writeFileSync(web.configFile!, typeof doc === 'string' ? doc : toYaml(doc));
  if (token !== undefined) {
    web.bearerTokenFile = join(into, 'token');
    writeFileSync(web.bearerTokenFile, `${token}\n`);
  }
  return web;
}

async function serve(web: WebFiles) {
  const s = await serveHttp({ web });
  served.push(s);
  return s;
}

const rejections = (s: ServedHttp) =>
  s.lines().filter((l) => l.level === 50 && l.msg.startsWith('web config change rejected')).length;

/** Writes a broken version and waits until the watcher has seen (and rejected) it. */
async function breakAndWait(s: ServedHttp, change: () => void) {
  const before = rejections(s);
  change();
  await s.waitForLog(() => rejections(s) > before);
}

const FULL = () => ({ basic_auth_users: { [USER]: hash } });

describe('a web config broken while the daemon runs', () => {
  // the ways a file being rewritten in place, or a Secret being swapped, can look for a moment
  const BROKEN: Array<[string, (file: string) => void]> = [
    ['emptied', (f) => writeFileSync(f, '')],
    ['only blank lines and comments', (f) => writeFileSync(f, '\n# rewritten by the config tool\n\n')],
    ['cut short before basic_auth_users', (f) => writeFileSync(f, 'http_server_config:\n  http2: true\n')],
    ['cut short after `basic_auth_users:`', (f) => writeFileSync(f, 'basic_auth_users:\n')],
    [
      'cut short inside a hash',
      (f) => writeFileSync(f, `basic_auth_users:\n  ${USER}: ${hash.slice(0, 20)}`),
    ],
    ['invalid YAML', (f) => writeFileSync(f, 'basic_auth_users: [oops\n')],
    ['deleted', (f) => rmSync(f)],
    [
      'a dangling symlink (a Secret mount mid-swap)',
      (f) => {
        rmSync(f);
        symlinkSync(join(dir, 'no-such-target'), f);
      },
    ],
  ];
  for (const [what, breakIt] of BROKEN) {
    it(`${what}: the last good users stay, logged at error; /metrics never opens`, async () => {
      const web = files(FULL());
      const s = await serve(web);
      expect((await request(s.port, '/metrics')).status).toBe(401);
      await breakAndWait(s, () => breakIt(web.configFile!));
      expect((await request(s.port, '/metrics')).status).toBe(401);
      expect((await request(s.port, '/metrics', { auth: basicAuth(USER, PASSWORD) })).status).toBe(200);
      expect(s.lines().some((l) => l.msg.startsWith('web config reloaded'))).toBe(false);

      // fixing the file is seen: the watcher still looks at it
      rmSync(web.configFile!, { force: true });
      writeFileSync(web.configFile!, toYaml({ basic_auth_users: { grafana: hash } }));
      await s.waitForLog((l) => l.msg === 'web config reloaded');
      expect((await request(s.port, '/metrics', { auth: basicAuth('grafana', PASSWORD) })).status).toBe(200);
      expect((await request(s.port, '/metrics')).status).toBe(401);
    });
  }

  it('with a bearer token too: a file that loses its users is rejected, though the token still guards', async () => {
    const web = files(FULL(), TOKEN);
    const s = await serve(web);
    await breakAndWait(s, () => writeFileSync(web.configFile!, 'http_server_config:\n  http2: true\n'));
    const line = s.lines().find((l) => l.msg.startsWith('web config change rejected'))!;
    expect(line.msg).toContain('basic_auth_users is gone');
    expect(line.msg).toContain('basic_auth_users: {}');
    expect((await request(s.port, '/metrics', { auth: basicAuth(USER, PASSWORD) })).status).toBe(200);
    expect((await request(s.port, '/metrics', { auth: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  for (const [what, breakIt] of [
    ['emptied', (f: string) => writeFileSync(f, ' \n')],
    ['deleted', (f: string) => rmSync(f)],
    ['two words', (f: string) => writeFileSync(f, 'two words\n')],
  ] as const) {
    it(`a bearer token file ${what}: the last good token stays in force, logged at error`, async () => {
      const web = files(FULL(), TOKEN);
      const s = await serve(web);
      await breakAndWait(s, () => breakIt(web.bearerTokenFile!));
      expect((await request(s.port, '/metrics')).status).toBe(401);
      expect((await request(s.port, '/metrics', { auth: `Bearer ${TOKEN}` })).status).toBe(200);
      expect(s.logText()).not.toContain('two words');
    });
  }

  it('`basic_auth_users: {}` turns authentication off on purpose, logged at warn', async () => {
    const web = files(FULL());
    const s = await serve(web);
    writeFileSync(web.configFile!, 'basic_auth_users: {}\n');
    const warned = await s.waitForLog((l) => l.msg.startsWith('web config reloaded'));
    expect(warned.level).toBe(40);
    expect(warned.msg).toContain('/metrics answers without credentials');
    expect((await request(s.port, '/metrics')).status).toBe(200);
  });
});

describe('a web config that turns no authentication on, at start', () => {
  const noDefaults = tempDir('cfg-none-');
  const loadProblems = (web: WebFiles) => {
    try {
      preflight(
        loadConfig({
          defaultsDir: noDefaults,
          env: {
            DATABASE_URL: 'postgresql://app@db.internal/app',
            WEB_CONFIG_FILE: web.configFile!,
            ...(web.bearerTokenFile ? { WEB_BEARER_TOKEN_FILE: web.bearerTokenFile } : {}),
          },
        }),
      );
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).exitCode).toBe(78);
      return (err as ConfigError).describe();
    }
    return undefined;
  };
  const construct = (web: WebFiles) =>
    new HttpServer({
      host: '127.0.0.1',
      port: 0,
      registry: createRegistry(),
      logger: createLogger({ level: 'silent', format: 'json' }),
      liveness: {},
      readiness: () => ({ ready: true, since: '' }),
      web,
    });

  for (const [what, doc, expected] of [
    ['an empty file', '', 'the file is empty'],
    ['only comments', '# nothing yet\n', 'the file is empty'],
    ['`basic_auth_users:` without a value', 'basic_auth_users:\n', 'basic_auth_users to list users'],
    ['headers but no credentials', { http_server_config: { http2: true } }, 'turns no authentication on'],
  ] as const) {
    it(`${what}: exit 78 naming the file and the fix (basic_auth_users: {})`, () => {
      const web = files(doc);
      const text = loadProblems(web)!;
      expect(text).toContain(web.configFile);
      expect(text).toContain(expected);
      expect(text).toContain('basic_auth_users: {}');
      expect(() => construct(web)).toThrow(expect.objectContaining({ exitCode: 78 }));
    });
  }

  it('no credentials but a bearer token: starts', () => {
    expect(loadProblems(files({ http_server_config: { http2: true } }, TOKEN))).toBeUndefined();
  });

  it('`basic_auth_users: {}` starts, and says at warn that /metrics is open', async () => {
    const web = files({ basic_auth_users: {} });
    expect(loadProblems(web)).toBeUndefined();
    const s = await serve(web);
    const warned = s.lines().find((l) => l.level === 40 && l.msg.includes('without credentials'));
    expect(warned).toBeDefined();
    expect((await request(s.port, '/metrics')).status).toBe(200);
  });

  it('`pg-maintd run` with an emptied web config exits 78 before serving, no stack trace', async () => {
    const web = files('');
    const cli = spawnCli(['run'], {
      DATABASE_URL: 'postgresql://app@127.0.0.1:1/app',
      WEB_CONFIG_FILE: web.configFile,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
    });
    expect((await cli.exited).code).toBe(78);
    expect(cli.output()).toContain(web.configFile);
    expect(cli.output()).toContain('basic_auth_users: {}');
    expect(cli.output()).not.toContain('http server listening');
    expect(cli.output()).not.toMatch(/\n\s+at /);
  });
});
