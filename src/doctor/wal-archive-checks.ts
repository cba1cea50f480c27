/**
 * What continuous WAL archiving (WAL_ARCHIVE) needs of the server, checked when it is on: WAL
 * detailed enough to restore from (wal_level), a free WAL sender and the REPLICATION attribute for
 * pg_receivewal, a pg_hba entry that lets it in (tried with a real replication connection), a
 * bound on what a slot left behind can keep (max_slot_wal_keep_size), the slot's health, and in
 * `command` mode an archive_command that hands WAL to pg-maintd.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseDatabaseUrl } from '../core/database-url.js';
import { errorMessage } from '../core/errors.js';
import { currentUrl } from '../db/url-file.js';
import { libpqEnv, toolPath } from '../programs/client-tools.js';
import {
  alterSystemSql,
  quoteIdent,
  quoteLiteral,
  RELOAD_SQL,
  type Check,
  type CheckContext,
  type Finding,
} from './finding.js';

const run = promisify(execFile);

const SQL = `
  SELECT (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_level') AS wal_level,
         (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'max_wal_senders') AS max_senders,
         (SELECT count(*)::int FROM pg_catalog.pg_stat_replication) AS senders,
         (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'max_slot_wal_keep_size') AS keep_size,
         (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'archive_mode') AS archive_mode,
         (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'archive_command') AS archive_command,
         (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'archive_timeout') AS archive_timeout,
         (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) AS may_replicate,
         pg_catalog.pg_is_in_recovery() AS standby`;

interface Row {
  wal_level: string | null;
  max_senders: number | null;
  senders: number;
  keep_size: string | null;
  archive_mode: string | null;
  archive_command: string | null;
  archive_timeout: number | null;
  may_replicate: boolean | null;
  standby: boolean;
}

const SLOT_SQL = `SELECT wal_status::text AS wal_status, active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::text`;

export const walArchiveCheck: Check = {
  ids: [
    'wal.wal_level',
    'wal.max_wal_senders',
    'wal.max_slot_wal_keep_size',
    'wal.replication_role',
    'wal.replication_connection',
    'wal.slot',
    'wal.archive_command',
  ],
  async run(ctx: CheckContext): Promise<Finding[]> {
    const mode = ctx.config.pitr.archive;
    if (mode === 'off') return [];
    const r = (await ctx.client.query<Row>(SQL)).rows[0]!;
    const out: Finding[] = [walLevel(r)];
    if (mode === 'stream') {
      out.push(senders(r), keepSize(ctx, r), replicationRole(ctx, r));
      out.push(await replicationConnection(ctx));
      out.push(await slot(ctx));
    } else out.push(archiveCommand(r));
    return out;
  },
};

function walLevel(r: Row): Finding {
  const base = {
    id: 'wal.wal_level',
    title: 'WAL holds enough to restore from (wal_level replica or logical)',
    why: 'with wal_level minimal the WAL cannot rebuild a base backup to a point in time, and pg_receivewal cannot stream',
    found: r.wal_level ?? 'unknown',
  };
  if (r.wal_level === 'replica' || r.wal_level === 'logical') return { ...base, status: 'ok' };
  return {
    ...base,
    status: 'fail',
    fix: { sql: [alterSystemSql('wal_level', 'replica')], steps: ['restart PostgreSQL'], restart: true },
  };
}

function senders(r: Row): Finding {
  const max = r.max_senders ?? 0;
  const base = {
    id: 'wal.max_wal_senders',
    title: 'a WAL sender is free for pg_receivewal',
    why: 'pg_receivewal takes one WAL sender for as long as it streams; with none free it cannot connect, and archiving stops',
    found: `${r.senders} of max_wal_senders = ${max} in use`,
  };
  if (max > 0 && r.senders < max) return { ...base, status: 'ok' };
  return {
    ...base,
    status: 'fail',
    fix: {
      sql: [alterSystemSql('max_wal_senders', String(Math.max(10, max + 2)))],
      steps: ['restart PostgreSQL'],
      restart: true,
    },
  };
}

function keepSize(ctx: CheckContext, r: Row): Finding {
  const base = {
    id: 'wal.max_slot_wal_keep_size',
    title: 'a replication slot left behind cannot fill the disk (max_slot_wal_keep_size)',
    why: 'the slot keeps every WAL file pg_receivewal has not confirmed; if pg-maintd stops for long, unbounded it fills pg_wal and stops the server. Bounded, the slot is invalidated instead (pg-maintd reports the gap and takes a new base backup)',
    found:
      r.keep_size === null ? 'not available' : r.keep_size === '-1' ? '-1 (unbounded)' : `${r.keep_size} MB`,
  };
  if (ctx.facts.serverVersionNum < 130000)
    return {
      ...base,
      status: 'info',
      found: `PostgreSQL ${ctx.facts.serverVersion} has no such setting (13 and later)`,
    };
  if (r.keep_size !== '-1') return { ...base, status: 'ok' };
  return {
    ...base,
    status: 'warn',
    fix: {
      sql: [alterSystemSql('max_slot_wal_keep_size', '50GB'), RELOAD_SQL],
      steps: ['pick a size the volume of pg_wal can hold beside its normal use'],
    },
  };
}

function replicationRole(ctx: CheckContext, r: Row): Finding {
  const base = {
    id: 'wal.replication_role',
    title: `${ctx.facts.role} may stream WAL (REPLICATION)`,
    why: 'pg_receivewal and the replication slot need the REPLICATION attribute (or a superuser)',
  };
  if (r.may_replicate)
    return { ...base, status: 'ok', found: ctx.facts.superuser ? 'superuser' : 'REPLICATION' };
  return {
    ...base,
    status: 'fail',
    found: `${ctx.facts.role} has NOREPLICATION`,
    fix: { sql: [`ALTER ROLE ${quoteIdent(ctx.facts.role)} REPLICATION;`] },
  };
}

/** A real physical replication connection (IDENTIFY_SYSTEM), made as pg_receivewal makes it. */
async function replicationConnection(ctx: CheckContext): Promise<Finding> {
  const target = parseDatabaseUrl(currentUrl(ctx.config.db).url);
  const base = {
    id: 'wal.replication_connection',
    title: 'pg_hba.conf lets pg-maintd open a replication connection',
    why: 'pg_receivewal connects to the pseudo-database "replication", which pg_hba.conf lists apart from ordinary databases',
  };
  const env = libpqEnv(target, ctx.config.db.ssl);
  env.PGAPPNAME = 'pg-maintd-doctor';
  try {
    // the conninfo names only replication mode; host, user and password come from the environment
    const { stdout } = await run(
      toolPath('psql', ctx.config.backup.clientBinDir),
      ['-X', '-A', '-t', '-d', 'replication=true', '-c', 'IDENTIFY_SYSTEM'],
      { env, timeout: 20_000 },
    );
    return {
      ...base,
      status: 'ok',
      found: `IDENTIFY_SYSTEM answered (${stdout.trim().split('|')[0] ?? ''})`,
    };
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? errorMessage(err)).trim();
    return {
      ...base,
      status: 'fail',
      found: stderr.split('\n')[0] ?? 'the connection failed',
      fix: {
        steps: [
          `add to pg_hba.conf, before any line that rejects it: hostssl replication ${target.user ?? 'pgmaintd'} <pg-maintd's address>/32 scram-sha-256`,
          'reload PostgreSQL (SELECT pg_reload_conf();)',
        ],
      },
    };
  }
}

async function slot(ctx: CheckContext): Promise<Finding> {
  const name = ctx.config.pitr.slot;
  const r = (await ctx.client.query<{ wal_status: string | null; active: boolean }>(SLOT_SQL, [name]))
    .rows[0];
  const base = {
    id: 'wal.slot',
    title: `the replication slot ${name} keeps WAL for pg-maintd`,
    why: 'the slot keeps the WAL pg_receivewal has not read yet, across restarts of pg-maintd; an invalidated (lost) slot means WAL is missing from the archive',
  };
  if (!r)
    return {
      ...base,
      status: 'info',
      found: 'not created yet (pg-maintd creates it when it starts to stream)',
    };
  const state = `wal_status ${r.wal_status ?? 'unknown'}, ${r.active ? 'streaming' : 'not streaming'}`;
  if (r.wal_status === 'lost')
    return {
      ...base,
      status: 'fail',
      found: state,
      fix: {
        steps: [
          'the archive has a gap: pg-maintd drops and makes the slot again and takes a new base backup when it streams; raise max_slot_wal_keep_size so it does not happen again',
        ],
      },
    };
  if (r.wal_status === 'unreserved' || r.wal_status === 'extended')
    return {
      ...base,
      status: 'warn',
      found: state,
      why: `${base.why}; ${r.wal_status === 'unreserved' ? 'unreserved: the server will remove WAL the slot still needs at the next checkpoint' : 'extended: it keeps more than max_wal_size'}`,
      fix: {
        steps: ['check pg-maintd streams (pgmaintd_wal_archiver_up, its log) and the store is reachable'],
      },
    };
  return { ...base, status: 'ok', found: state };
}

function archiveCommand(r: Row): Finding {
  const base = {
    id: 'wal.archive_command',
    title: "the server archives through pg-maintd (archive_command = 'pg-maintd wal-push %p')",
    why: 'in WAL_ARCHIVE=command mode the server hands each finished WAL file to archive_command; without archive_mode on and pg-maintd wal-push nothing reaches the store',
  };
  const mode = r.archive_mode ?? 'off';
  const cmd = r.archive_command ?? '';
  const found = `archive_mode = ${mode}, archive_command = ${quoteLiteral(cmd)}, archive_timeout = ${r.archive_timeout ?? 0} s`;
  if (mode === 'off' || !/wal-push\s+.*%p/.test(cmd))
    return {
      ...base,
      status: 'fail',
      found,
      fix: {
        sql: [
          ...(mode === 'off' ? [alterSystemSql('archive_mode', 'on')] : []),
          alterSystemSql('archive_command', 'pg-maintd wal-push %p'),
          alterSystemSql('archive_timeout', '60s'),
          RELOAD_SQL,
        ],
        ...(mode === 'off' ? { steps: ['restart PostgreSQL (archive_mode needs one)'], restart: true } : {}),
      },
    };
  if (!r.archive_timeout)
    return {
      ...base,
      status: 'warn',
      found,
      why: 'without archive_timeout a quiet server hands over a WAL file only when 16 MB have filled: the last minutes or hours could be lost with the server',
      fix: { sql: [alterSystemSql('archive_timeout', '60s'), RELOAD_SQL] },
    };
  return { ...base, status: 'ok', found };
}
