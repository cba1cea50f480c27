/**
 * Other sessions as an operator needs to see them, to name who holds a lock pg-maintd waits for:
 * pid, role, application_name, client address, how long its transaction has been open. Everything
 * here is chosen by whoever opened that session (a role name, an application_name), so it is
 * cleaned up before it reaches a log line or a message. The query text is left out: it may carry
 * literals worth hiding (see METRICS_QUERY_TEXT).
 */
import type pg from 'pg';

export interface SessionInfo {
  pid: number;
  role: string | null;
  applicationName: string | null;
  /** null for a Unix-socket client, or when this role may not see it (pg_read_all_stats). */
  clientAddr: string | null;
  state: string | null;
  /** Seconds since the session's transaction began; null when idle or not visible. */
  xactSeconds: number | null;
  /** A prepared transaction (two-phase commit) holds it, not a session: its name. */
  prepared?: string;
}

const SESSIONS_SQL = `
  SELECT a.pid, a.usename::text AS role, a.application_name, pg_catalog.host(a.client_addr) AS client_addr,
         a.state, extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8 AS xact_seconds
    FROM pg_catalog.pg_stat_activity a
   WHERE a.pid = ANY($1::int4[])
   ORDER BY a.xact_start NULLS LAST, a.pid`;

const BLOCKERS_SQL = 'SELECT pg_catalog.pg_blocking_pids($1::int4) AS pids';

/** A name another role chose, safe for one log line: printable, at most 64 characters. */
export function cleanName(s: string | null | undefined): string | null {
  if (s === null || s === undefined) return null;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is removed
  const printable = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
  return printable.length > 64 ? `${printable.slice(0, 61)}...` : printable;
}

export async function describeSessions(client: pg.ClientBase, pids: number[]): Promise<SessionInfo[]> {
  if (pids.length === 0) return [];
  const r = await client.query<{
    pid: number;
    role: string | null;
    application_name: string | null;
    client_addr: string | null;
    state: string | null;
    xact_seconds: number | null;
  }>(SESSIONS_SQL, [pids]);
  const seen = r.rows.map((x) => ({
    pid: x.pid,
    role: cleanName(x.role),
    applicationName: cleanName(x.application_name),
    clientAddr: cleanName(x.client_addr),
    state: cleanName(x.state),
    xactSeconds: x.xact_seconds === null ? null : Math.round(x.xact_seconds),
  }));
  // a session that ended between the two queries is still named by its pid
  for (const pid of pids)
    if (!seen.some((s) => s.pid === pid))
      seen.push({ pid, role: null, applicationName: null, clientAddr: null, state: null, xactSeconds: null });
  return seen;
}

/** The sessions the backend `pid` waits for (pg_blocking_pids), described. */
export async function blockingSessions(client: pg.ClientBase, pid: number): Promise<SessionInfo[]> {
  const r = await client.query<{ pids: number[] }>(BLOCKERS_SQL, [pid]);
  return describeSessions(client, [...new Set(r.rows[0]?.pids ?? [])]);
}

/** One session for a message: "pid 4242 (role app, application_name "report", client 10.0.0.7, transaction open 3600 s)". */
function sessionText(s: SessionInfo): string {
  if (s.prepared !== undefined)
    return `the prepared transaction ${JSON.stringify(s.prepared)} (role ${s.role ?? '?'}${s.xactSeconds === null ? '' : `, prepared ${s.xactSeconds} s ago`}; no session: COMMIT PREPARED or ROLLBACK PREPARED ends it)`;
  const parts = [
    `role ${s.role ?? '?'}`,
    `application_name ${JSON.stringify(s.applicationName ?? '')}`,
    `client ${s.clientAddr ?? 'local or not visible'}`,
  ];
  if (s.xactSeconds !== null) parts.push(`transaction open ${s.xactSeconds} s`);
  return `pid ${s.pid} (${parts.join(', ')})`;
}

export function sessionsText(sessions: SessionInfo[]): string {
  return sessions.length ? sessions.map(sessionText).join('; ') : 'a session that has ended since';
}
