/**
 * Reads the web config file of Prometheus exporter-toolkit (what postgres_exporter's
 * --web.config.file reads: tls_server_config, http_server_config, basic_auth_users) and the bearer
 * token file, strictly: an unknown key is an error, as exporter-toolkit's UnmarshalStrict makes it.
 * Problems name the file, the key and what is expected, never a value that may be secret.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createSecureContext, type SecureVersion } from 'node:tls';
import { parse as parseYaml } from 'yaml';
import { editDistance } from '../config/edit-distance.js';
import { fileReadProblem, OperatorError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import { CIPHER_SUITES, CURVES, secureContextOptions, TLS13_SUITES } from './web-tls.js';

const CLIENT_AUTH_TYPES = [
  'NoClientCert',
  'RequestClientCert',
  'RequireAnyClientCert',
  'VerifyClientCertIfGiven',
  'RequireAndVerifyClientCert',
] as const;
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];
const TLS_VERSIONS: Record<string, SecureVersion> = {
  TLS10: 'TLSv1',
  TLS11: 'TLSv1.1',
  TLS12: 'TLSv1.2',
  TLS13: 'TLSv1.3',
};
/** exporter-toolkit lets only these headers be set, some only to these values. */
const HEADERS: Record<string, string[] | undefined> = {
  'Strict-Transport-Security': undefined,
  'X-Content-Type-Options': ['nosniff'],
  'X-Frame-Options': ['deny', 'sameorigin'],
  'X-XSS-Protection': undefined,
  'Content-Security-Policy': undefined,
};
const KEYS = {
  '': ['tls_server_config', 'http_server_config', 'basic_auth_users'],
  tls_server_config: [
    'cert_file',
    'key_file',
    'cert',
    'key',
    'client_ca_file',
    'client_ca',
    'client_auth_type',
    'client_allowed_sans',
    'min_version',
    'max_version',
    'cipher_suites',
    'curve_preferences',
    'prefer_server_cipher_suites',
  ],
  http_server_config: ['http2', 'headers'],
} as const;
const BCRYPT_RE = /^\$2[aby]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;
const HASH_HELP = `made with \`htpasswd -nBC 10 "" | tr -d ':\\n'\` or bcryptjs`;

export interface TlsSettings {
  /** PEM text; the key is secret and never logged. */
  cert: string;
  key: string;
  ca?: string;
  clientAuth: ClientAuthType;
  allowedSans?: string[];
  minVersion: SecureVersion;
  maxVersion: SecureVersion;
  ciphers?: string;
  ecdhCurve?: string;
  honorCipherOrder: boolean;
}

export interface WebSettings {
  tls?: TlsSettings;
  headers: Record<string, string>;
  /** user -> bcrypt hash */
  users: Map<string, string>;
  /** SHA-256 of the bearer token: the token itself is not kept. */
  tokenDigest?: Buffer;
}

export interface WebFiles {
  configFile?: string;
  bearerTokenFile?: string;
}

/** Shaped like a configuration problem: the setting, the file it names, and what is expected. */
export interface WebProblem {
  field: 'WEB_CONFIG_FILE' | 'WEB_BEARER_TOKEN_FILE';
  given: string;
  allowed: string;
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

/** The files as absolute paths (the server re-reads them from wherever it runs). */
export function resolveWebFiles(files: WebFiles): WebFiles {
  return {
    configFile: files.configFile === undefined ? undefined : resolve(files.configFile),
    bearerTokenFile: files.bearerTokenFile === undefined ? undefined : resolve(files.bearerTokenFile),
  };
}

export function readWebSettings(files: WebFiles): WebRead {
  const problems: WebProblem[] = [];
  const read: string[] = [];
  const settings: WebSettings = { headers: {}, users: new Map() };
  if (files.configFile) {
    read.push(files.configFile);
    Object.assign(settings, readConfigFile(new Ctx(files.configFile, problems, read)));
  }
  if (files.bearerTokenFile) {
    read.push(files.bearerTokenFile);
    settings.tokenDigest = readToken(files.bearerTokenFile, problems);
  }
  return { settings: problems.length ? undefined : settings, problems, files: read };
}

class Ctx {
  readonly dir: string;
  constructor(
    readonly file: string,
    readonly problems: WebProblem[],
    readonly files: string[],
  ) {
    this.dir = dirname(file);
  }
  problem(allowed: string): undefined {
    this.problems.push({ field: 'WEB_CONFIG_FILE', given: this.file, allowed });
    return undefined;
  }
  /** The file's text; relative paths are relative to the web config file's folder. */
  readFile(key: string, path: unknown, what: string): string | undefined {
    if (typeof path !== 'string' || path === '') return this.problem(`${key} to be a path to ${what}`);
    const abs = isAbsolute(path) ? path : join(this.dir, path);
    this.files.push(abs);
    try {
      return readFileSync(abs, 'utf8');
    } catch (err) {
      return this.problem(
        `${key} to name ${what} (${abs}: ${fileReadProblem(err)}; a relative path is resolved against the web config file's folder)`,
      );
    }
  }
}

function readConfigFile(ctx: Ctx): Partial<WebSettings> {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(ctx.file, 'utf8'));
  } catch (err) {
    return ctx.problem(`a readable web config YAML file (${fileReadProblem(err)})`) ?? {};
  }
  if (doc === null || doc === undefined) return {}; // an empty file: no TLS, no users
  const root = mapping(doc, '', ctx);
  if (!root) return {};
  if ('rate_limit' in root)
    ctx.problem('no rate_limit: pg-maintd does not support it (remove it; limit at a proxy instead)');
  strictKeys(root, '', ctx);
  return {
    tls: readTls(mapping(root.tls_server_config, 'tls_server_config', ctx), ctx),
    headers: readHeaders(mapping(root.http_server_config, 'http_server_config', ctx), ctx),
    users: readUsers(mapping(root.basic_auth_users, 'basic_auth_users', ctx), ctx),
  };
}

function mapping(v: unknown, key: string, ctx: Ctx): Record<string, unknown> | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  return ctx.problem(`${key || 'the file'} to be a mapping of keys to values`);
}

function strictKeys(obj: Record<string, unknown>, at: keyof typeof KEYS, ctx: Ctx) {
  const known: readonly string[] = KEYS[at];
  for (const key of Object.keys(obj)) {
    if (known.includes(key) || (at === '' && key === 'rate_limit')) continue;
    const near = known.find((k) => editDistance(k, key.toLowerCase().replace(/-/g, '_')) <= 2);
    const where = at ? ` in ${at}` : ' at the top level';
    ctx.problem(
      `no key "${key}"${where}: it is unknown${near ? ` (did you mean ${near}?)` : ''}; known keys: ${known.join(', ')}`,
    );
  }
}

function readTls(t: Record<string, unknown> | undefined, ctx: Ctx): TlsSettings | undefined {
  if (!t) return undefined;
  strictKeys(t, 'tls_server_config', ctx);
  const k = (name: string) => `tls_server_config.${name}`;
  const set = (name: string) => t[name] !== undefined && t[name] !== null && t[name] !== '';
  // as exporter-toolkit: TLS is on when any of these is set, and then needs a certificate and key
  const enabled = ['cert_file', 'cert', 'key_file', 'key', 'client_ca_file', 'client_ca', 'client_auth_type'];
  if (!enabled.some(set)) return undefined;
  const pem = (file: string, inline: string, what: string, required: boolean) => {
    if (set(file) && set(inline)) return ctx.problem(`only one of ${k(file)} and ${k(inline)}`);
    if (set(file)) return ctx.readFile(k(file), t[file], what);
    if (set(inline))
      return typeof t[inline] === 'string' ? t[inline] : ctx.problem(`${k(inline)} to be PEM text`);
    if (required)
      return ctx.problem(`${k(file)} (or ${inline}) as well: TLS needs a certificate and its key`);
    return undefined;
  };
  const cert = pem('cert_file', 'cert', 'a PEM certificate file', true);
  const key = pem('key_file', 'key', 'a PEM private key file', true);
  const ca = pem('client_ca_file', 'client_ca', 'a PEM file of client CA certificates', false);
  let pairOk = true; // a key that does not fit its certificate is reported here, once
  if (cert !== undefined && key !== undefined) {
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      pairOk = false;
      ctx.problem(
        `${k('cert_file')} and ${k('key_file')} to hold a PEM certificate and its private key (${(err as Error).message.split('\n')[0]})`,
      );
    }
  }
  if (ca !== undefined && !validCaBundle(ca)) ctx.problem(`${k('client_ca_file')} to hold PEM certificates`);

  const clientAuth = (t.client_auth_type ?? 'NoClientCert') as ClientAuthType;
  if (!CLIENT_AUTH_TYPES.includes(clientAuth))
    ctx.problem(`${k('client_auth_type')} to be one of ${CLIENT_AUTH_TYPES.join(', ')}`);
  if (ca !== undefined && clientAuth === 'NoClientCert')
    ctx.problem(
      `${k('client_auth_type')} to be set (e.g. RequireAndVerifyClientCert) since client CAs are given: exporter-toolkit refuses client CAs without a client auth policy`,
    );
  let allowedSans: string[] | undefined;
  if (t.client_allowed_sans !== undefined && t.client_allowed_sans !== null) {
    allowedSans = strings(t.client_allowed_sans, k('client_allowed_sans'), ctx);
    if (clientAuth !== 'RequireAnyClientCert' && clientAuth !== 'RequireAndVerifyClientCert')
      ctx.problem(
        `${k('client_auth_type')} to be RequireAnyClientCert or RequireAndVerifyClientCert, which client_allowed_sans needs`,
      );
  }
  const version = (name: string, dflt: SecureVersion) => {
    if (!set(name)) return dflt;
    const v = TLS_VERSIONS[String(t[name])];
    return v ?? ctx.problem(`${k(name)} to be one of ${Object.keys(TLS_VERSIONS).join(', ')}`) ?? dflt;
  };
  const minVersion = version('min_version', 'TLSv1.2');
  const maxVersion = version('max_version', 'TLSv1.3');
  if (minVersion > maxVersion) ctx.problem(`${k('min_version')} not above ${k('max_version')}`);
  const named = (name: string, table: Record<string, string | null>) => {
    if (!set(name)) return undefined;
    const list = strings(t[name], k(name), ctx) ?? [];
    const unknown = list.filter((n) => !Object.hasOwn(table, n));
    if (unknown.length)
      ctx.problem(
        `${k(name)} to hold names Go knows, such as ${Object.keys(table)[0]} (unknown: ${unknown.join(', ')})`,
      );
    return list.map((n) => table[n]).filter((n): n is string => !!n);
  };
  const suites = named('cipher_suites', CIPHER_SUITES);
  const curves = named('curve_preferences', CURVES);
  const honor = t.prefer_server_cipher_suites ?? true;
  if (typeof honor !== 'boolean') ctx.problem(`${k('prefer_server_cipher_suites')} to be true or false`);
  if (cert === undefined || key === undefined || !pairOk) return undefined;
  const settings: TlsSettings = {
    cert,
    key,
    ca,
    clientAuth,
    allowedSans,
    minVersion,
    maxVersion,
    // Go's cipher_suites do not touch TLS 1.3, whose suites stay the default
    ciphers: suites?.length ? [...TLS13_SUITES, ...suites].join(':') : undefined,
    ecdhCurve: curves?.length ? curves.join(':') : undefined,
    honorCipherOrder: honor !== false,
  };
  // what OpenSSL refuses (a key that does not match its certificate, ciphers or curves it lacks) is
  // a configuration problem now, not a failed start or a failed reload later
  try {
    createSecureContext(secureContextOptions(settings));
  } catch (err) {
    ctx.problem(`tls_server_config to be usable by OpenSSL (${(err as Error).message})`);
    return undefined;
  }
  return settings;
}

function validCaBundle(pem: string): boolean {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  try {
    for (const b of blocks) new X509Certificate(b);
  } catch {
    return false;
  }
  return blocks.length > 0;
}

function strings(v: unknown, key: string, ctx: Ctx): string[] | undefined {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  return ctx.problem(`${key} to be a list of strings`);
}

function readHeaders(h: Record<string, unknown> | undefined, ctx: Ctx): Record<string, string> {
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

function readUsers(u: Record<string, unknown> | undefined, ctx: Ctx): Map<string, string> {
  const users = new Map<string, string>();
  for (const [user, hash] of Object.entries(u ?? {})) {
    // the value is never shown: a plain password written by mistake would land in the log
    if (typeof hash !== 'string' || !BCRYPT_RE.test(hash))
      ctx.problem(`basic_auth_users.${user} to be a bcrypt hash such as $2y$10$... (${HASH_HELP})`);
    else if (user.includes(':')) ctx.problem(`basic_auth_users to have no ":" in user names ("${user}")`);
    else users.set(user, hash);
  }
  return users;
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
