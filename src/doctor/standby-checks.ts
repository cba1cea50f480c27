/**
 * Backups from a hot standby (BACKUP_FROM=standby or any): pg_dump holds one snapshot for the whole
 * dump, and on a standby a recovery conflict cancels it. VACUUM on the primary removing rows the
 * snapshot still sees is the common conflict (hot_standby_feedback=on prevents it); an ACCESS
 * EXCLUSIVE lock replayed from the primary (DROP, TRUNCATE, VACUUM's end-of-table truncation) is the
 * other, which no feedback prevents: replay waits max_standby_streaming_delay, then cancels the dump.
 */
import type { Check, CheckContext, Finding } from './finding.js';
import { alterSystemSql, RELOAD_SQL } from './finding.js';
import { describeSource, humanMs, settingMs } from './format.js';

const SQL = `
  SELECT pg_catalog.pg_is_in_recovery() AS standby,
         (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'hot_standby_feedback') AS feedback,
         (SELECT source FROM pg_catalog.pg_settings WHERE name = 'hot_standby_feedback') AS feedback_source,
         (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'max_standby_streaming_delay') AS delay,
         (SELECT unit FROM pg_catalog.pg_settings WHERE name = 'max_standby_streaming_delay') AS delay_unit`;

interface Row {
  standby: boolean;
  feedback: string | null;
  feedback_source: string | null;
  delay: string | null;
  delay_unit: string | null;
}

const FEEDBACK = 'standby.hot_standby_feedback';
const DELAY = 'standby.max_standby_streaming_delay';

const why = {
  feedback:
    'pg_dump on a standby holds one snapshot for the whole backup; without hot_standby_feedback, VACUUM on the primary removes rows that snapshot still sees, and replaying that cancels the dump (a recovery conflict) once max_standby_streaming_delay has passed',
  delay:
    'a lock the primary takes that conflicts with the dump (DROP, TRUNCATE, VACUUM truncating a table) makes replay wait for the dump at most max_standby_streaming_delay, then cancels it; -1 lets replay wait (the standby lags meanwhile)',
};

export const standbyBackupCheck: Check = {
  ids: [FEEDBACK, DELAY],
  async run(ctx: CheckContext): Promise<Finding[]> {
    if (ctx.config.backup.from === 'primary' || ctx.config.backup.schedule === 'off') return [];
    const r = (await ctx.client.query<Row>(SQL)).rows[0]!;
    if (!r.standby)
      return [
        {
          id: FEEDBACK,
          status: 'info',
          title: 'settings for backups from a standby',
          found: `BACKUP_FROM=${ctx.config.backup.from}, and this server is a primary`,
          why: 'hot_standby_feedback and max_standby_streaming_delay matter on the standby the backups are taken from: run `pg-maintd doctor` with DATABASE_URL pointing at it',
        },
      ];
    const backupMs = ctx.config.backup.timeoutMs;
    const delayMs = settingMs(r.delay ?? '0', r.delay_unit);
    const delayOk = delayMs < 0 || delayMs >= backupMs;
    const feedbackOn = r.feedback === 'on';
    const from = (source: string | null) =>
      source && source !== 'default' ? ` (from ${describeSource(source)})` : '';
    const feedback: Finding = {
      id: FEEDBACK,
      title: 'the primary keeps the rows a backup on this standby reads (hot_standby_feedback)',
      found: `${r.feedback ?? 'unknown'}${from(r.feedback_source)}`,
      why: why.feedback,
      ...(feedbackOn
        ? { status: 'ok' as const }
        : {
            // with replay allowed to wait as long as the backup, a conflict delays replay rather than
            // cancelling the dump: worth fixing, not yet broken
            status: delayOk ? ('warn' as const) : ('fail' as const),
            fix: {
              sql: [alterSystemSql('hot_standby_feedback', 'on'), RELOAD_SQL],
              steps: [
                'run it on this standby; not applied by --apply: the primary then keeps dead rows while a backup runs here (some bloat for its length)',
              ],
            },
          }),
    };
    const shown = delayMs < 0 ? '-1 (replay waits as long as it takes)' : humanMs(delayMs);
    const delay: Finding = {
      id: DELAY,
      title: 'replay waits for a backup rather than cancelling it (max_standby_streaming_delay)',
      found: `${shown}; BACKUP_TIMEOUT is ${humanMs(backupMs)}`,
      why: why.delay,
      ...(delayOk
        ? { status: 'ok' as const }
        : {
            status: 'warn' as const,
            fix: {
              sql: [alterSystemSql('max_standby_streaming_delay', '-1'), RELOAD_SQL],
              steps: [
                `or a value of at least BACKUP_TIMEOUT (${humanMs(backupMs)}); not applied by --apply: the standby's lag can then grow for as long as a backup runs (pg_replication_lag_seconds), so a standby that serves reads or failover may want a dedicated one for backups`,
              ],
            },
          }),
    };
    return [feedback, delay];
  },
};
