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
  ...new Set(
    FIELD_NAMES.map((n) =>
      n.startsWith('PG_CLIENT_')
        ? 'PG_CLIENT_'
        : n.startsWith('PG_SERVER_')
          ? 'PG_SERVER_'
          : `${n.split('_')[0]}_`,
    ),
  ),
];

/** Variables of other software that share a prefix with the settings. */
const FOREIGN = new Set([
  'HTTP_PROXY', // proxies for HTTP clients
  'WEB_CONCURRENCY', // Heroku and other platforms' worker count
  'DATABASE_URL_UNPOOLED', // Neon and Vercel: the direct connection beside DATABASE_URL
]);
/** Docker's legacy links: a container linked as "db" gives DB_NAME, DB_ENV_POSTGRES_PASSWORD, ... */
const DOCKER_LINK = /^[A-Z0-9]+_ENV_\w+$/;
/**
 * The parts of a connection that other tools take one by one. pg-maintd does not read them, and a
 * "did you mean" would point at the wrong setting: say how it takes the connection instead.
 */
const CONNECTION_PART =
  /^(DB|DATABASE)_(HOST|HOSTNAME|PORT|USER|USERNAME|PASS|PASSWORD|NAME|DATABASE|SCHEMA)$/;
/** Kubernetes service links: a Service named "metrics" gives METRICS_SERVICE_HOST, METRICS_PORT, ... */
const SERVICE_LINK = /_SERVICE_(HOST|PORT)(_\w+)?$|_PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?$/;

export interface UnknownVariable {
  name: string;
  suggestion: string | undefined;
}

/** Environment variables with a setting's prefix that are no setting. Values are never looked at. */
export function unknownEnvironment(env: NodeJS.ProcessEnv): UnknownVariable[] {
  // a Docker link's alias also gives <ALIAS>_NAME and <ALIAS>_PORT beside its _ENV_ and _PORT_n_ ones
  const linked = new Set(
    Object.keys(env).flatMap((n) => {
      const m = /^([A-Z0-9]+)_(?:ENV_\w+|PORT_\d+_(?:TCP|UDP|SCTP)\w*)$/.exec(n);
      return m ? [`${m[1]}_NAME`, `${m[1]}_PORT`] : [];
    }),
  );
  return Object.keys(env)
    .filter(
      (name) =>
        /^[A-Z][A-Z0-9_]*$/.test(name) &&
        !(name in FIELDS) &&
        SETTING_PREFIXES.some((p) => name.startsWith(p)) &&
        !FOREIGN.has(name) &&
        !linked.has(name) &&
        !DOCKER_LINK.test(name) &&
        !SERVICE_LINK.test(name),
    )
    .sort()
    .map((name) => ({ name, suggestion: CONNECTION_PART.test(name) ? undefined : suggestSetting(name) }));
}

export function describeUnknownVariable(v: UnknownVariable): string {
  if (CONNECTION_PART.test(v.name))
    return `environment variable ${v.name} is not read by pg-maintd: it takes the connection as one URL, DATABASE_URL (or DATABASE_URL_FILE), such as postgresql://user@host:5432/dbname, with the password in PGPASSWORD or a passfile`;
  return `environment variable ${v.name} is not a pg-maintd setting and is ignored${
    v.suggestion ? ` (did you mean ${v.suggestion}?)` : '; `pg-maintd help settings` lists the settings'
  }`;
}
