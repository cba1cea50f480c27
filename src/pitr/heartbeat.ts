/**
 * The PITR heartbeat: while this replica leads, one row of pgmaintd.pitr_heartbeat is set to the
 * server's clock_timestamp() every PITR_HEARTBEAT_INTERVAL, and its number goes up by one. A drill
 * restores to just before one heartbeat and checks that the row it finds is the one numbered before
 * it (so a writer that ran late on a busy host cannot fail a good restore) and how far before the
 * target it lies; the writes also keep WAL moving on an idle server. The table lives in the schema
 * the leases made sure only pg-maintd's role controls, and is used only when it is a plain table
 * owned by that role (or a superuser). Once a minute a named restore point is added where the role
 * may (superuser, or EXECUTE granted): a permission error is said once and the restore points stop.
 */
import { onCluster } from '../db/cluster.js';
import type { DbPool } from '../db/pool.js';
import { LEASE_SCHEMA } from '../db/lease-table.js';
import { classify } from '../db/sqlstate.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import type { PitrMetrics } from './metrics.js';

export const HEARTBEAT_TABLE = `${LEASE_SCHEMA}.pitr_heartbeat`;
const RESTORE_POINT_MS = 60_000;

const CREATE_SQL = `
  CREATE TABLE IF NOT EXISTS ${HEARTBEAT_TABLE} (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    at timestamptz NOT NULL,
    seq bigint NOT NULL DEFAULT 0,
    seq_at timestamptz
  )`;

// a table made before heartbeats were numbered gains the columns (where the role may alter it)
const NUMBERS_SQL = `ALTER TABLE ${HEARTBEAT_TABLE}
  ADD COLUMN IF NOT EXISTS seq bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS seq_at timestamptz`;

const OWNER_SQL = `
  SELECT c.relkind::text AS kind,
         pg_catalog.pg_get_userbyid(c.relowner) AS owner,
         (c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER)
          OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = c.relowner)) AS ok,
         (SELECT count(*) FROM pg_catalog.pg_attribute a
           WHERE a.attrelid = c.oid AND a.attname IN ('seq', 'seq_at') AND NOT a.attisdropped) = 2 AS numbered
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = '${LEASE_SCHEMA}' AND c.relname = 'pitr_heartbeat'`;

// The time is read in SET, once the row is locked: after the previous heartbeat committed, whoever
// wrote it. seq_at repeats it, so a drill can tell a row this SQL wrote (seq_at = at) from one an
// older writer or someone else updated without numbering it.
const BEAT_SQL = `
  INSERT INTO ${HEARTBEAT_TABLE} AS h (id, at, seq, seq_at)
  SELECT 1, x.c, 1, x.c FROM (SELECT pg_catalog.clock_timestamp() AS c) x WHERE ${onCluster(1)}
  ON CONFLICT (id) DO UPDATE
     SET (at, seq, seq_at) = (SELECT y.c, h.seq + 1, y.c FROM (SELECT pg_catalog.clock_timestamp() AS c) y)
  RETURNING pg_catalog.date_part('epoch', h.at)::float8 AS at`;

// a table the role may write but not alter (a superuser's): heartbeats without numbers
const UNNUMBERED_BEAT_SQL = `
  INSERT INTO ${HEARTBEAT_TABLE} AS h (id, at)
  SELECT 1, pg_catalog.clock_timestamp() WHERE ${onCluster(1)}
  ON CONFLICT (id) DO UPDATE SET at = pg_catalog.clock_timestamp()
  RETURNING pg_catalog.date_part('epoch', h.at)::float8 AS at`;

export interface HeartbeatOptions {
  pool: DbPool;
  intervalMs: number;
  /** The cluster archived: no heartbeat or restore point goes to another (DATABASE_URL_FILE moved). */
  sysid?: string | undefined;
  logger: Logger;
  metrics?: PitrMetrics | undefined;
}

export class Heartbeat {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #ready = false;
  #beatSql = BEAT_SQL;
  #lastRestorePoint = 0;
  #restorePoints = true;
  #warned = '';

  constructor(private readonly o: HeartbeatOptions) {}

  start(): void {
    if (this.#timer || this.#stopped) return;
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** Writes one heartbeat now; the server's time of it (Unix seconds). */
  async beat(): Promise<number> {
    if (!this.#ready) await this.#ensureTable();
    const r = await this.o.pool.query<{ at: number }>(this.#beatSql, [this.o.sysid ?? null]);
    const row = r.rows[0];
    if (!row)
      throw new Error(
        `DATABASE_URL names another cluster than the one archived (${this.o.sysid}): no heartbeat written there`,
      );
    const at = row.at;
    this.o.metrics?.heartbeatLast.set(at);
    if (this.#restorePoints && Date.now() - this.#lastRestorePoint >= RESTORE_POINT_MS) {
      this.#lastRestorePoint = Date.now();
      await this.#restorePoint();
    }
    return at;
  }

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#running = this.beat()
        .then(() => {
          this.#warned = '';
        })
        .catch((err: unknown) => {
          const message = errorMessage(err);
          if (message !== this.#warned)
            this.o.logger.warn({ err: { message } }, 'writing the PITR heartbeat failed; retrying');
          this.#warned = message;
        })
        .finally(() => {
          if (!this.#stopped) this.#schedule(this.o.intervalMs);
        });
    }, ms);
    this.#timer.unref();
  }

  async #ensureTable(): Promise<void> {
    let r = await this.o.pool.query<{ kind: string; owner: string; ok: boolean; numbered: boolean }>(
      OWNER_SQL,
    );
    if (!r.rows[0]) {
      try {
        await this.o.pool.query(CREATE_SQL);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== '23505' && code !== '42P07' && code !== '42710') throw err;
      }
      r = await this.o.pool.query(OWNER_SQL);
    }
    const row = r.rows[0];
    if (!row || row.kind !== 'r' || !row.ok)
      throw new Error(
        `${HEARTBEAT_TABLE} is ${row ? (row.kind !== 'r' ? `not a table (relkind ${row.kind})` : `owned by ${row.owner}, not by pg-maintd's role`) : 'missing'}: a DBA checks what it is and drops it (pg-maintd makes it again)`,
      );
    if (!row.numbered) {
      try {
        await this.o.pool.query(NUMBERS_SQL);
      } catch (err) {
        if (classify(err).kind !== 'permission_denied') throw err;
        this.#beatSql = UNNUMBERED_BEAT_SQL;
        this.o.logger.warn(
          {
            why: errorMessage(err),
            fix: `a DBA drops ${HEARTBEAT_TABLE} (pg-maintd makes it again) or adds the columns: ${NUMBERS_SQL.replace(/\s+/g, ' ')}`,
          },
          'PITR heartbeats are written without numbers: drills measure against PITR_HEARTBEAT_INTERVAL only',
        );
      }
    }
    this.#ready = true;
  }

  async #restorePoint(): Promise<void> {
    try {
      await this.o.pool.query(
        `SELECT pg_catalog.pg_create_restore_point('pgmaintd-' || pg_catalog.to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"Z"'))
          WHERE ${onCluster(1)}`,
        [this.o.sysid ?? null],
      );
    } catch (err) {
      if (classify(err).kind !== 'permission_denied') throw err;
      this.#restorePoints = false;
      this.o.logger.info(
        { why: errorMessage(err) },
        'no named restore points: the role may not call pg_create_restore_point (optional; heartbeats are enough for drills)',
      );
    }
  }
}
