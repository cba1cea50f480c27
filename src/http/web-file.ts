/**
 * Reading one web config file strictly: where each problem is collected (naming the file, the key
 * and what is expected, never a value that may be secret), the files it names (read relative to its
 * folder, and watched), and the checks of shape every section needs.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { editDistance } from '../core/edit-distance.js';
import { fileReadProblem } from '../core/errors.js';

/** Shaped like a configuration problem: the setting, the file it names, and what is expected. */
export interface WebProblem {
  field: 'WEB_CONFIG_FILE' | 'WEB_BEARER_TOKEN_FILE';
  given: string;
  allowed: string;
}

/** The keys exporter-toolkit knows, by section ('' is the top level); UnmarshalStrict refuses others. */
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

/** One web config file being read: its folder, the problems found, the files it names. */
export class WebConfigFile {
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

export function mapping(v: unknown, key: string, ctx: WebConfigFile): Record<string, unknown> | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  return ctx.problem(`${key || 'the file'} to be a mapping of keys to values`);
}

export function strictKeys(obj: Record<string, unknown>, at: keyof typeof KEYS, ctx: WebConfigFile) {
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

export function strings(v: unknown, key: string, ctx: WebConfigFile): string[] | undefined {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  return ctx.problem(`${key} to be a list of strings`);
}
