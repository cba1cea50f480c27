/**
 * The settings checks, each with its SQL beside it: slow-query and lock-wait logging and I/O timing
 * (what the seed guide's troubleshooting section relies on), autovacuum, idle transactions and
 * pending restarts. This file also lists every check in report order; pg_stat_statements, versions,
 * roles and connections have their own files.
 */
import { connectionChecks } from './connections.js';
import { extensionChecks } from './extension-checks.js';
import { RELOAD_SQL, alterSystemSql, type Check, type CheckContext, type Finding } from './finding.js';
import { alterSystemCanChange, describeSource, humanMs, settingMs } from './format.js';
import { roleChecks } from './role-checks.js';
import { standbyBackupCheck } from './standby-checks.js';
import { walArchiveCheck } from './wal-archive-checks.js';
import { pgDumpCheck, serverVersionCheck } from './version-checks.js';
import { wraparoundCheck } from './wraparound-check.js';

const SETTING_SQL = `SELECT setting, unit, source FROM pg_settings WHERE name = $1`;

interface SettingRow {
  setting: string;
  unit: string | null;
  source: string;
}

async function setting(ctx: CheckContext, name: string): Promise<SettingRow> {
  const r = await ctx.client.query<SettingRow>(SETTING_SQL, [name]);
  const row = r.rows[0];
  if (!row) throw new Error(`setting ${name} is not visible to this role`);
  return row;
}

/** The fix for a reloadable setting: ALTER SYSTEM and a reload, or where to change it instead. */
function reloadableFix(name: string, value: string, source: string): Finding['fix'] {
  if (!alterSystemCanChange(source)) {
    return {
      steps: [
        `${name} comes from ${describeSource(source)}, which overrides ALTER SYSTEM: set ${name} = ${value} there`,
      ],
    };
  }
  return {
    sql: [alterSystemSql(name, value), RELOAD_SQL],
    remedies: [{ kind: 'alter_system', parameter: name, value }],
  };
}

const logMinDuration: Check = {
  ids: ['settings.log_min_duration_statement'],
  async run(ctx) {
    const s = await setting(ctx, 'log_min_duration_statement');
    const ms = settingMs(s.setting, s.unit);
    const base = {
      id: 'settings.log_min_duration_statement',
      title: 'slow statements are logged',
      why: 'statements slower than 1 s are logged (log_min_duration_statement = 1000) to find slow queries; -1 logs none',
      fix: reloadableFix('log_min_duration_statement', '1s', s.source),
    };
    const from = s.source === 'default' ? '' : ` (from ${describeSource(s.source)})`;
    if (ms < 0) return { ...base, status: 'warn', found: `-1 (off)${from}` };
    if (ms === 0)
      return {
        ...base,
        status: 'warn',
        found: `0 (every statement is logged)${from}`,
        why: 'logging every statement floods the log and costs I/O on a busy server; 1 s is the usual threshold',
      };
    const { fix: _fix, ...ok } = base;
    return { ...ok, status: 'ok', found: `${humanMs(ms)}${from}` };
  },
};

/** A boolean setting that should be on. */
function settingOn(name: string, opts: { title: string; why: string; failWhenOff: boolean }): Check {
  const id = `settings.${name}`;
  return {
    ids: [id],
    async run(ctx) {
      const s = await setting(ctx, name);
      const from = s.source === 'default' ? '' : ` (from ${describeSource(s.source)})`;
      const base = { id, title: opts.title, why: opts.why, found: `${s.setting}${from}` };
      if (s.setting === 'on') return { ...base, status: 'ok' };
      return {
        ...base,
        status: opts.failWhenOff ? 'fail' : 'warn',
        fix: reloadableFix(name, 'on', s.source),
      };
    },
  };
}

const idleInTransaction: Check = {
  ids: ['settings.idle_in_transaction_session_timeout'],
  async run({ facts }) {
    const s = facts.startup.idle_in_transaction_session_timeout!;
    const ms = settingMs(s.setting, s.unit);
    const from = s.source === 'default' ? '' : ` (from ${describeSource(s.source)})`;
    const base = {
      id: 'settings.idle_in_transaction_session_timeout',
      title: 'sessions idle in a transaction are ended',
      why: 'a session left idle in a transaction holds its locks and its snapshot: it blocks DDL and keeps VACUUM from removing dead rows',
    };
    if (ms > 0) return { ...base, status: 'ok', found: `${humanMs(ms)}${from}` };
    return {
      ...base,
      status: 'warn',
      found: `0 (never)${from}`,
      fix: {
        sql: [alterSystemSql('idle_in_transaction_session_timeout', '10min'), RELOAD_SQL],
        steps: [
          'not applied by --apply: it ends application sessions, so agree the value with the application owners (or set it per role: ALTER ROLE app SET idle_in_transaction_session_timeout = ...)',
        ],
      },
    };
  },
};

const PENDING_RESTART_SQL = `SELECT name, setting FROM pg_settings WHERE pending_restart ORDER BY name`;

const pendingRestart: Check = {
  ids: ['settings.pending_restart'],
  async run({ client, facts }) {
    const rows = (await client.query<{ name: string; setting: string }>(PENDING_RESTART_SQL)).rows;
    const seesAll = facts.superuser || facts.roles.pg_read_all_settings;
    const base = {
      id: 'settings.pending_restart',
      title: 'no setting waits for a restart',
      why: 'a changed setting marked pending_restart has no effect until PostgreSQL restarts; the running server differs from its configuration files',
    };
    const scope = seesAll ? '' : ' (of the settings this role can see; pg_read_all_settings sees all)';
    if (rows.length === 0) return { ...base, status: 'ok', found: `none${scope}` };
    return {
      ...base,
      status: 'warn',
      found: `${rows.map((r) => r.name).join(', ')}${scope}`,
      fix: {
        steps: [
          'restart PostgreSQL in a maintenance window (e.g. systemctl restart postgresql, or pg_ctl restart -D <data dir>)',
        ],
        restart: true,
      },
    };
  },
};

/** Every check, in the order the report lists them. */
export function allChecks(): Check[] {
  return [
    serverVersionCheck,
    ...extensionChecks(),
    logMinDuration,
    settingOn('track_io_timing', {
      title: 'I/O timing is tracked',
      why: 'without it pg_stat_statements and pg_stat_database show no time spent reading and writing blocks, so a slow query cannot be told apart from a slow disk',
      failWhenOff: false,
    }),
    settingOn('log_lock_waits', {
      title: 'lock waits are logged',
      why: 'a session waiting longer than deadlock_timeout (1 s) for a lock is logged with the blocking pids, which lock monitoring otherwise only sees while it happens',
      failWhenOff: false,
    }),
    settingOn('autovacuum', {
      title: 'autovacuum is on',
      why: 'without autovacuum dead rows pile up, statistics go stale, and transaction ID wraparound eventually forces the server to stop accepting writes',
      failWhenOff: true,
    }),
    settingOn('track_counts', {
      title: 'table statistics are collected (track_counts)',
      why: 'autovacuum decides what to vacuum from these counts, and pg-maintd’s table metrics and maintenance read them; with track_counts off autovacuum does nothing',
      failWhenOff: true,
    }),
    idleInTransaction,
    wraparoundCheck,
    pendingRestart,
    standbyBackupCheck,
    walArchiveCheck,
    ...connectionChecks(),
    ...roleChecks(),
    pgDumpCheck,
  ];
}
