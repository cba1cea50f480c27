/**
 * Reads the web config file of Prometheus exporter-toolkit (what postgres_exporter's
 * --web.config.file reads: tls_server_config, http_server_config, basic_auth_users) and the bearer
 * token file, strictly: an unknown key is an error, as exporter-toolkit's UnmarshalStrict makes it.
 * Problems name the file, the key and what is expected, never a value that may be secret.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { fileReadProblem, OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';
import { WebConfigFile, mapping, strictKeys, type WebProblem } from './web-file.js';
import { readTls } from './web-tls-config.js';
import type { TlsSettings } from './web-tls.js';

/** exporter-toolkit lets only these headers be set, some only to these values. */
const HEADERS: Record<string, string[] | undefined> = {
  'Strict-Transport-Security': undefined,
  'X-Content-Type-Options': ['nosniff'],
  'X-Frame-Options': ['deny', 'sameorigin'],
  'X-XSS-Protection': undefined,
  'Content-Security-Policy': undefined,
};
const BCRYPT_RE = /^\$2[aby]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;
const HASH_HELP = `made with \`htpasswd -nBC 10 "" | tr -d ':\\n'\` or bcryptjs`;

/**
 * How the file speaks of basic auth: users listed, `basic_auth_users: {}` (off, on purpose), or no
 * key at all, which is all a file cut short or half-written may say.
 */
export type BasicAuthState = 'users' | 'off' | 'absent';

export interface WebSettings {
  tls?: TlsSettings;
  headers: Record<string, string>;
  /** user -> bcrypt hash */
  users: Map<string, string>;
  basicAuth: BasicAuthState;
  /** SHA-256 of the bearer token: the token itself is not kept. */
  tokenDigest?: Buffer;
}

export interface WebFiles {
  configFile?: string;
  bearerTokenFile?: string;
}

export interface WebRead {
  settings?: WebSettings;
  problems: WebProblem[];
  /** Every file read (or meant to be), for change detection. */
  files: string[];
}

/** An invalid web config when the HTTP server is built or reloads: exit 78, every problem listed. */
export class WebConfigError extends OperatorError {
  constructor(readonly problems: WebProblem[]) {
    super(
      `invalid web configuration:\n${problems.map((p) => `  - ${p.field} ${p.given}: expected ${p.allowed}`).join('\n')}`,
      { exitCode: EXIT.CONFIG, hint: 'correct the files above, then run `pg-maintd check-config`' },
    );
    this.name = 'WebConfigError';
  }
}

export function readWebSettings(files: WebFiles): WebRead {
  const problems: WebProblem[] = [];
  const read: string[] = [];
  const settings: WebSettings = { headers: {}, users: new Map(), basicAuth: 'absent' };
  if (files.configFile) {
    read.push(files.configFile);
    Object.assign(settings, readConfigFile(new WebConfigFile(files.configFile, problems, read)));
  }
  if (files.bearerTokenFile) {
    read.push(files.bearerTokenFile);
    settings.tokenDigest = readToken(files.bearerTokenFile, problems);
  }
  // a web config that names no credentials and does not say so is what an emptied or cut-short
  // file looks like: it must not open /metrics to anyone (a file that says so may)
  if (files.configFile && !problems.length && settings.basicAuth === 'absent' && !settings.tokenDigest)
    problems.push({
      field: 'WEB_CONFIG_FILE',
      given: files.configFile,
      allowed: `basic_auth_users (the file turns no authentication on, as a file cut short would: list users, set WEB_BEARER_TOKEN_FILE, or write \`basic_auth_users: {}\` to serve /metrics without credentials on purpose)`,
    });
  return { settings: problems.length ? undefined : settings, problems, files: read };
}

function readConfigFile(ctx: WebConfigFile): Partial<WebSettings> {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(ctx.file, 'utf8'));
  } catch (err) {
    return ctx.problem(`a readable web config YAML file (${fileReadProblem(err)})`) ?? {};
  }
  if (doc === null || doc === undefined)
    return (
      ctx.problem(
        'web config settings (the file is empty or only comments: half-written? Write `basic_auth_users: {}` to serve /metrics without credentials on purpose, or unset WEB_CONFIG_FILE)',
      ) ?? {}
    );
  const root = mapping(doc, '', ctx);
  if (!root) return {};
  if ('rate_limit' in root)
    ctx.problem('no rate_limit: pg-maintd does not support it (remove it; limit at a proxy instead)');
  strictKeys(root, '', ctx);
  return {
    tls: readTls(mapping(root.tls_server_config, 'tls_server_config', ctx), ctx),
    headers: readHeaders(mapping(root.http_server_config, 'http_server_config', ctx), ctx),
    ...readUsers(root, ctx),
  };
}

function readHeaders(h: Record<string, unknown> | undefined, ctx: WebConfigFile): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  strictKeys(h, 'http_server_config', ctx);
  if (h.http2 !== undefined && h.http2 !== null && typeof h.http2 !== 'boolean')
    ctx.problem('http_server_config.http2 to be true or false');
  const headers = mapping(h.headers, 'http_server_config.headers', ctx) ?? {};
  for (const [name, value] of Object.entries(headers)) {
    const canonical = Object.keys(HEADERS).find((n) => n.toLowerCase() === name.toLowerCase());
    if (!canonical) {
      ctx.problem(
        `http_server_config.headers to set only ${Object.keys(HEADERS).join(', ')} (as exporter-toolkit allows); "${name}" can not be configured`,
      );
      continue;
    }
    const allowed = HEADERS[canonical];
    if (typeof value !== 'string' || (allowed && !allowed.includes(value))) {
      ctx.problem(
        `http_server_config.headers.${canonical} to be ${allowed ? `one of ${allowed.join(', ')}` : 'a string'}`,
      );
      continue;
    }
    out[canonical] = value;
  }
  return out;
}

function readUsers(
  root: Record<string, unknown>,
  ctx: WebConfigFile,
): Pick<WebSettings, 'users' | 'basicAuth'> {
  const users = new Map<string, string>();
  if (!('basic_auth_users' in root)) return { users, basicAuth: 'absent' };
  // `basic_auth_users:` with nothing after it is where a file cut short ends: not the same as {}
  if (root.basic_auth_users === null || root.basic_auth_users === undefined) {
    ctx.problem(
      'basic_auth_users to list users (it has no value: half-written? Write `basic_auth_users: {}` to turn basic auth off on purpose)',
    );
    return { users, basicAuth: 'absent' };
  }
  const u = mapping(root.basic_auth_users, 'basic_auth_users', ctx) ?? {};
  for (const [user, hash] of Object.entries(u)) {
    // the value is never shown: a plain password written by mistake would land in the log
    if (typeof hash !== 'string' || !BCRYPT_RE.test(hash))
      ctx.problem(`basic_auth_users.${user} to be a bcrypt hash such as $2y$10$... (${HASH_HELP})`);
    else if (user.includes(':')) ctx.problem(`basic_auth_users to have no ":" in user names ("${user}")`);
    else users.set(user, hash);
  }
  return { users, basicAuth: users.size ? 'users' : 'off' };
}

function readToken(path: string, problems: WebProblem[]): Buffer | undefined {
  const problem = (allowed: string) => {
    problems.push({ field: 'WEB_BEARER_TOKEN_FILE', given: path, allowed });
    return undefined;
  };
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (err) {
    return problem(`a readable file holding the token (${fileReadProblem(err)})`);
  }
  if (token === '') return problem('a file holding the token (it is empty)');
  if (!/^[\x21-\x7e]+$/.test(token))
    return problem('one token of printable ASCII without spaces or line breaks inside');
  return createHash('sha256').update(token).digest();
}
