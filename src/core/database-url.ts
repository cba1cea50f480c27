/** Parsing of postgres:// URLs into the parts pg and pg_dump need, without leaking the password. */

export interface ConnectionTarget {
  host: string;
  port: number;
  user: string | undefined;
  password: string | undefined;
  database: string;
}

export function parseDatabaseUrl(url: string): ConnectionTarget {
  const u = new URL(url);
  const socketHost = u.searchParams.get('host');
  const host = socketHost ?? (decodeURIComponent(u.hostname).replace(/^\[(.*)\]$/, '$1') || 'localhost');
  const user = u.username ? decodeURIComponent(u.username) : undefined;
  const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || user || 'postgres';
  return {
    host,
    port: u.port ? Number(u.port) : 5432,
    user,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database,
  };
}

/** user@host:port/db: for logs and messages. Never carries the password. */
export function describeTarget(t: ConnectionTarget, database = t.database): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.user ? `${t.user}@` : ''}${host}:${t.port}/${database}`;
}
