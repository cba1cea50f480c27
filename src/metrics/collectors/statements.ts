/**
 * pg_stat_statements with postgres_exporter's names and labels {user, datname, queryid}. The selected
 * set is the union of the top N by total time and the top N by mean time (the seed guide's slow-query
 * view), so a rare slow statement is not lost and the series stay bounded. Column names follow the
 * server: total_time before 13, total_exec_time from 13, shared_blk_read_time from 17. Query text is
 * opt-in, its literals masked (utility statements keep theirs in pg_stat_statements: a password in
 * ALTER ROLE), and truncated. A missing or unloaded extension is said once, not on every poll.
 */
import pg from 'pg';
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';
import { maskQueryText } from '../query-text.js';

type Label = 'user' | 'datname' | 'queryid';

/** The view in the schema the extension lives in, quoted: sessions search pg_catalog alone. */
function statementsSql(serverVersionNum: number, schema = 'public'): string {
  const total = serverVersionNum >= 130000 ? 'total_exec_time' : 'total_time';
  const [read, write] =
    serverVersionNum >= 170000
      ? ['shared_blk_read_time', 'shared_blk_write_time']
      : ['blk_read_time', 'blk_write_time'];
  return `
    WITH s AS (
      SELECT userid, dbid, queryid, sum(calls) AS calls, sum(${total}) AS total_ms, sum(rows) AS rows,
             sum(${read}) AS read_ms, sum(${write}) AS write_ms, min(query) AS query
        FROM ${pg.escapeIdentifier(schema)}.pg_stat_statements WHERE queryid IS NOT NULL
       GROUP BY userid, dbid, queryid
    ), picked AS (
      (SELECT * FROM s ORDER BY total_ms DESC LIMIT $1)
      UNION
      (SELECT * FROM s WHERE calls > 0 ORDER BY total_ms / calls DESC LIMIT $1)
    )
    SELECT r.rolname AS "user", d.datname, p.queryid::text AS queryid, p.calls, p.total_ms / 1000 AS seconds,
           p.rows, p.read_ms / 1000 AS read_seconds, p.write_ms / 1000 AS write_seconds, left(p.query, $2) AS query
      FROM picked p JOIN pg_roles r ON r.oid = p.userid JOIN pg_database d ON d.oid = p.dbid`;
}

// shared_preload_libraries is readable only with pg_read_all_settings (in pg_monitor); a role without
// it falls back to the library's own setting, which exists only where the library is loaded
const AVAILABLE_SQL = `
  SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS installed,
         (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
           WHERE e.extname = 'pg_stat_statements') AS schema,
         CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE')
              THEN 'pg_stat_statements' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
              ELSE EXISTS (SELECT 1 FROM pg_settings WHERE name = 'pg_stat_statements.max') END AS preloaded`;

interface Row {
  user: string;
  datname: string;
  queryid: string;
  calls: string;
  seconds: string;
  rows: string;
  read_seconds: string;
  write_seconds: string;
  query: string;
}

export class StatementsCollector implements Collector {
  readonly name = 'stat_statements';
  readonly #families: Array<[keyof Row, CachedFamily<Label>]>;
  readonly #queryText: CachedFamily<'queryid' | 'query'>;
  readonly #available: CachedFamily;
  #saidUnavailable = false;

  constructor(
    registry: Registry,
    private readonly opts: {
      limit: number;
      queryText: boolean;
      queryTextLength: number;
      intervalMs?: number;
    },
  ) {
    const labelNames = ['user', 'datname', 'queryid'] as const;
    const counter = (name: string, help: string) =>
      new CachedFamily<Label>(registry, { name, help, type: 'counter', labelNames });
    this.#families = [
      ['calls', counter('pg_stat_statements_calls_total', 'Number of times executed')],
      [
        'seconds',
        counter('pg_stat_statements_seconds_total', 'Total time spent in the statement, in seconds'),
      ],
      [
        'rows',
        counter(
          'pg_stat_statements_rows_total',
          'Total number of rows retrieved or affected by the statement',
        ),
      ],
      [
        'read_seconds',
        counter(
          'pg_stat_statements_block_read_seconds_total',
          'Total time the statement spent reading blocks, in seconds',
        ),
      ],
      [
        'write_seconds',
        counter(
          'pg_stat_statements_block_write_seconds_total',
          'Total time the statement spent writing blocks, in seconds',
        ),
      ],
    ];
    this.#queryText = new CachedFamily(registry, {
      name: 'pg_stat_statements_query_id',
      help: 'SQL query text of a queryid (opt-in, truncated; every literal masked as ?, comments removed)',
      type: 'counter', // as the reference types it (value 1)
      labelNames: ['queryid', 'query'],
    });
    this.#available = new CachedFamily(registry, {
      name: 'pgmaintd_pg_stat_statements_available',
      help: 'Whether pg_stat_statements is installed in the database and preloaded (1) or not (0).',
      type: 'gauge',
    });
  }

  get intervalMs(): number | undefined {
    return this.opts.intervalMs;
  }

  async collect({ client, serverVersionNum, logger }: CollectorContext): Promise<void> {
    const a = (
      await client.query<{ installed: boolean; schema: string | null; preloaded: boolean }>(AVAILABLE_SQL)
    ).rows[0]!;
    if (!a.installed || !a.preloaded) {
      if (!this.#saidUnavailable) {
        this.#saidUnavailable = true;
        logger.warn(
          { collector: this.name, installed: a.installed, preloaded: a.preloaded },
          `pg_stat_statements is ${a.preloaded ? 'not installed in this database' : 'not in shared_preload_libraries'}: no statement metrics. ` +
            `Fix: ${a.preloaded ? 'CREATE EXTENSION pg_stat_statements' : 'add it to shared_preload_libraries (restart), then CREATE EXTENSION pg_stat_statements'} (see pg-maintd doctor)`,
        );
      }
      this.clear();
      this.#available.replace([{ labels: {}, value: 0 }]);
      return;
    }
    this.#saidUnavailable = false;
    // twice the length kept: masking shortens literals, and a literal the cut runs into is masked
    const r = await client.query<Row>(statementsSql(serverVersionNum, a.schema ?? 'public'), [
      this.opts.limit,
      this.opts.queryTextLength * 2,
    ]);
    for (const [column, family] of this.#families) {
      family.replace(
        r.rows.map((row) => ({
          labels: { user: row.user, datname: row.datname, queryid: row.queryid },
          value: Number(row[column]),
        })),
      );
    }
    // one series per queryid: the same statement run by two roles (or in two databases) shares it
    const texts = new Map<string, string>();
    if (this.opts.queryText)
      for (const row of r.rows)
        if (!texts.has(row.queryid))
          texts.set(row.queryid, maskQueryText(row.query, this.opts.queryTextLength));
    this.#queryText.replace([...texts].map(([queryid, query]) => ({ labels: { queryid, query }, value: 1 })));
    this.#available.replace([{ labels: {}, value: 1 }]);
  }

  clear(): void {
    for (const [, f] of this.#families) f.clear();
    this.#queryText.clear();
    this.#available.clear();
  }
}
