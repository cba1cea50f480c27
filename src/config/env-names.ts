/**
 * Names that look like settings but are not: "did you mean" for a key in a config file, and for
 * environment variables that carry one of the settings' prefixes (BACKUP_SHEDULE, DB_SSLMODE), which
 * would otherwise be ignored without a word.
 */
import { editDistance } from '../core/edit-distance.js';
import { FIELDS, FIELD_NAMES } from './fields.js';

/** The setting a mistyped name most likely meant, if one is near enough. */
export function suggestSetting(key: string): string | undefined {
  const k = key.toUpperCase().replace(/-/g, '_');
  if (k in FIELDS) return k;
  const near = FIELD_NAMES.map((n) => [n, editDistance(n, k)] as const).sort((a, b) => a[1] - b[1])[0];
  if (near && near[1] <= Math.min(3, Math.floor(k.length / 4))) return near[0];
  return FIELD_NAMES.find((n) => n.includes(k) || k.includes(n));
}

/**
 * The settings' prefixes (BACKUP_, DB_, S3_, ...), from their names. PG_ is narrowed to PG_CLIENT_:
 * the postgres image sets PG_MAJOR and PG_VERSION, and libpq's own variables (PGPASSWORD) have no
 * underscore after PG anyway.
 */
export const SETTING_PREFIXES: readonly string[] = [
  ...new Set(FIELD_NAMES.map((n) => (n.startsWith('PG_CLIENT_') ? 'PG_CLIENT_' : `${n.split('_')[0]}_`))),
];

/** Variables of other software that share a prefix with the settings. */
const FOREIGN = new Set([
  'HTTP_PROXY', // proxies for HTTP clients
  'WEB_CONCURRENCY', // Heroku and other platforms' worker count
]);
/** Kubernetes service links: a Service named "metrics" gives METRICS_SERVICE_HOST, METRICS_PORT, ... */
const SERVICE_LINK = /_SERVICE_(HOST|PORT)(_\w+)?$|_PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?$/;

export interface UnknownVariable {
  name: string;
  suggestion: string | undefined;
}

/** Environment variables with a setting's prefix that are no setting. Values are never looked at. */
export function unknownEnvironment(env: NodeJS.ProcessEnv): UnknownVariable[] {
  return Object.keys(env)
    .filter(
      (name) =>
        /^[A-Z][A-Z0-9_]*$/.test(name) &&
        !(name in FIELDS) &&
        SETTING_PREFIXES.some((p) => name.startsWith(p)) &&
        !FOREIGN.has(name) &&
        !SERVICE_LINK.test(name),
    )
    .sort()
    .map((name) => ({ name, suggestion: suggestSetting(name) }));
}

export function describeUnknownVariable(v: UnknownVariable): string {
  return `environment variable ${v.name} is not a pg-maintd setting and is ignored${
    v.suggestion ? ` (did you mean ${v.suggestion}?)` : '; `pg-maintd help settings` lists the settings'
  }`;
}
