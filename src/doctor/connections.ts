/**
 * Connection capacity: how full the server is against max_connections, and whether pg-maintd's own
 * pools fit in what is left (and in the role's and database's connection limits).
 */
import type { Config } from '../config/load.js';
import { parseDatabaseUrl } from '../core/database-url.js';
import { detectTransactionPooler, POOLER_WHY, poolerFix } from '../db/pooler.js';
import { effectiveSslMode, isLocalHost } from '../db/tls.js';
import { createLogger } from '../log/logger.js';
import { quoteIdent, type Check, type CheckContext, type Finding } from './finding.js';
import { plural } from './format.js';

// reserved_connections exists from PostgreSQL 16 (current_setting(..., true) is NULL before). Only
// client backends take max_connections slots; this doctor session is left out.
const CAPACITY_SQL = `
  SELECT current_setting('max_connections')::int AS max_connections,
         current_setting('superuser_reserved_connections')::int AS superuser_reserved,
         coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
         (SELECT count(*)::int FROM pg_stat_activity
           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS used,
         (SELECT count(*)::int FROM pg_stat_activity
           WHERE backend_type = 'client backend' AND application_name = 'pg-maintd') AS daemon,
         (SELECT datconnlimit FROM pg_database WHERE datname = current_database()) AS datconnlimit`;

interface Capacity {
  max_connections: number;
  superuser_reserved: number;
  reserved: number;
  used: number;
  daemon: number;
  datconnlimit: number;
}

const WHO_SQL =
  "SELECT usename, application_name, state, count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2, 3 ORDER BY 4 DESC;";

async function capacity(ctx: CheckContext): Promise<Capacity & { limit: number }> {
  const c = (await ctx.client.query<Capacity>(CAPACITY_SQL)).rows[0]!;
  return { ...c, limit: c.max_connections - c.superuser_reserved - c.reserved };
}

const headroom: Check = {
  ids: ['connections.headroom'],
  async run(ctx) {
    const c = await capacity(ctx);
    const pct = c.limit > 0 ? (100 * c.used) / c.limit : 100;
    const { connectionsWarnPct: warnAt, connectionsFailPct: failAt } = ctx.thresholds;
    const reserved = `max_connections ${c.max_connections} - superuser_reserved_connections ${c.superuser_reserved}${
      ctx.facts.serverVersionNum >= 160000 ? ` - reserved_connections ${c.reserved}` : ''
    }`;
    const base = {
      id: 'connections.headroom',
      title: 'connection headroom against max_connections',
      found: `${c.used} of ${c.limit} connections in use (${pct.toFixed(0)}%; ${reserved})`,
      why: `when the slots run out, every new connection fails with "too many clients" (pool exhaustion); warn above ${warnAt}%, fail above ${failAt}%`,
    };
    if (pct <= warnAt) return { ...base, status: 'ok' };
    return {
      ...base,
      status: pct > failAt ? 'fail' : 'warn',
      fix: {
        sql: [WHO_SQL],
        steps: [
          'find who holds the connections (above); lower the application pool sizes or put PgBouncer in front of the server',
          'or raise max_connections (needs a restart; each connection costs memory)',
        ],
      },
    };
  },
};

/**
 * The most connections `pg-maintd run` can open against this server, by what opens them. The metrics
 * poller's are METRICS_MAX_CONNECTIONS however many databases it polls (they share that budget).
 */
export function daemonNeeds(config: Config): { total: number; parts: string[] } {
  const parts: Array<[string, number]> = [
    ['DB_POOL_MAX', config.db.pool.max],
    ['readiness', 1],
    ['METRICS_MAX_CONNECTIONS', config.metrics.maxConnections],
  ];
  if (config.backup.schedule !== 'off') parts.push(['backup', 3]);
  if (config.verify.schedule !== 'off' && drillsOnThisServer(config)) parts.push(['restore drill', 3]);
  return {
    total: parts.reduce((n, [, v]) => n + v, 0),
    parts: parts.map(([k, v]) => `${k} ${v}`),
  };
}

/** Restore drills run on the server (and as the role) of DATABASE_URL unless VERIFY_DATABASE_URL says otherwise. */
export function drillsOnThisServer(config: Config): boolean {
  if (!config.verify.url) return true;
  const a = parseDatabaseUrl(config.db.url);
  const b = parseDatabaseUrl(config.verify.url);
  return a.host === b.host && a.port === b.port && a.user === b.user;
}

const pool: Check = {
  ids: ['connections.pool'],
  async run(ctx) {
    const { config, facts } = ctx;
    const c = await capacity(ctx);
    const need = daemonNeeds(config);
    // pg-maintd sessions open now are the daemon's own: they count as available to it.
    const free = c.limit - (c.used - c.daemon);
    const problems: Array<{ status: 'warn' | 'fail'; text: string; fix: string }> = [];
    const lower = (to: number) =>
      `lower DB_POOL_MAX to ${Math.max(1, to)} (--db-pool-max or the environment)${
        config.metrics.maxConnections > 1 ? ', or METRICS_MAX_CONNECTIONS' : ''
      }`;
    if (need.total > c.limit)
      problems.push({
        status: 'fail',
        text: `more than the ${c.limit} slots the server has for non-superusers`,
        fix: lower(config.db.pool.max - (need.total - c.limit)),
      });
    else if (need.total > free)
      problems.push({
        status: 'warn',
        text: `more than the ${plural(free, 'slot')} free now`,
        fix: lower(config.db.pool.max - (need.total - free)),
      });
    // CONNECTION LIMITs do not apply to superusers
    if (!facts.superuser && facts.connLimit >= 0 && need.total > facts.connLimit)
      problems.push({
        status: 'fail',
        text: `more than ${facts.role}'s CONNECTION LIMIT ${facts.connLimit}`,
        fix: `ALTER ROLE ${quoteIdent(facts.role)} CONNECTION LIMIT ${need.total};`,
      });
    if (!facts.superuser && c.datconnlimit >= 0 && need.total > c.datconnlimit)
      problems.push({
        status: 'warn',
        text: `more than database ${facts.database}'s CONNECTION LIMIT ${c.datconnlimit}`,
        fix: `ALTER DATABASE ${quoteIdent(facts.database)} CONNECTION LIMIT ${need.total + 20};`,
      });
    const base = {
      id: 'connections.pool',
      title: 'pg-maintd’s own connections fit',
      why: 'when pg-maintd cannot get a connection, its metrics, backups and drills fail, and the connections it takes are missing for the application',
    };
    const found = `pg-maintd opens up to ${need.total} connections (${need.parts.join(', ')})`;
    if (problems.length === 0) return { ...base, status: 'ok', found: `${found}; ${free} free` };
    const sql = problems.filter((p) => p.fix.endsWith(';')).map((p) => p.fix);
    const steps = problems.filter((p) => !p.fix.endsWith(';')).map((p) => p.fix);
    const finding: Finding = {
      ...base,
      status: problems.some((p) => p.status === 'fail') ? 'fail' : 'warn',
      found: `${found}: ${problems.map((p) => p.text).join('; ')}`,
      fix: { ...(sql.length ? { sql } : {}), ...(steps.length ? { steps } : {}) },
    };
    return finding;
  },
};

const TLS_SQL = `SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()`;

const tls: Check = {
  ids: ['connections.tls'],
  async run({ client, config, connection }) {
    const r = (await client.query<{ ssl: boolean; version: string | null }>(TLS_SQL)).rows[0];
    const mode = effectiveSslMode(config.db.ssl, connection.host);
    const local = isLocalHost(connection.host);
    const base = {
      id: 'connections.tls',
      title: 'the connection to the database is encrypted and the server verified',
      why: 'DATABASE_URL carries a password and backups carry every row; without TLS anyone on the network path reads them, and without verification a man in the middle can pose as the server (the seed’s rejectUnauthorized: false)',
    };
    if (r?.ssl && connection.verified)
      return {
        ...base,
        status: 'ok',
        found: `${r.version ?? 'TLS'}, certificate verified (DB_SSL_MODE=${mode})`,
      };
    if (r?.ssl)
      return {
        ...base,
        status: 'warn',
        found: `${r.version ?? 'TLS'}, server not verified (DB_SSL_MODE=${mode})`,
        fix: {
          steps: [
            'set DB_SSL_MODE=verify-full and DB_SSL_ROOT_CERT to the CA bundle that signed the server certificate',
          ],
        },
      };
    if (local)
      return {
        ...base,
        status: 'ok',
        found: `plaintext to ${connection.host} (loopback or socket: not on the network)`,
      };
    return {
      ...base,
      status: 'warn',
      found: `plaintext to ${connection.host} (DB_SSL_MODE=${mode})`,
      fix: {
        steps: [
          'turn on TLS on the server (ssl = on with a certificate), then set DB_SSL_MODE=verify-full and DB_SSL_ROOT_CERT',
        ],
      },
    };
  },
};

const pooler: Check = {
  ids: ['connections.pooler'],
  async run({ config }) {
    const target = parseDatabaseUrl(config.db.url);
    const base = {
      id: 'connections.pooler',
      title: 'pg-maintd has sessions of its own (no transaction-mode pooler in between)',
      why: POOLER_WHY,
    };
    const seen = await detectTransactionPooler(config.db, target, silent);
    if (!seen) return { ...base, status: 'ok', found: 'each session keeps its own server process' };
    return {
      ...base,
      status: seen.proven ? 'fail' : 'warn',
      found: seen.proven
        ? `a transaction-mode pooler: ${seen.found}`
        : `likely a transaction-mode pooler: ${seen.found}`,
      fix: { steps: poolerFix(target) },
    };
  },
};

const silent = createLogger({ level: 'silent', format: 'json' });

export function connectionChecks(): Check[] {
  return [headroom, pool, tls, pooler];
}
