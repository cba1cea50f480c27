/**
 * `pg-maintd status [--json]`: the summary the landing page shows, built on its own (no daemon
 * needed, as pgBackRest's `info`): one listing of the store per database, one connection for pg_up,
 * one poll of each collector, and the next slots of the configured schedules. Results go to stdout,
 * logs and what went wrong to stderr; what could be learned is printed whatever could not.
 */
import type { Command } from 'commander';
import { Registry } from 'prom-client';
import { catalogFor } from '../backup/catalog-for.js';
import { printable } from '../backup/naming.js';
import { backupFactsOf, unknownFacts } from '../backup/store-summary.js';
import { createStorage } from '../backup/storage/index.js';
import { type Config } from '../config/load.js';
import { explainConnectionError } from '../db/sqlstate.js';
import { errorMessage } from '../core/errors.js';
import { EXIT, type ExitCode } from '../core/exit-codes.js';
import { type Logger } from '../log/logger.js';
import { MAINTENANCE_JOB } from '../maintenance/job.js';
import { pollerFor } from '../metrics/poller-for.js';
import type { Poller, CollectorHealth } from '../metrics/poller.js';
import { Scheduler } from '../schedule/scheduler.js';
import { drillResultText, duration, instant, size, verifiedText } from '../status/format.js';
import { summarize, type BackupFacts, type Problem, type StatusSummary } from '../status/summary.js';
import { commandConfig } from './command-config.js';
import { addConfigOptions } from './config-options.js';

/**
 * The exit code of a summary: 69 when what it needs cannot be reached (pg_up 0, the store cannot be
 * listed), 1 when a database's newest backup is older than BACKUP_SCHEDULE allows, there is none, or its last
 * drill failed or compared nothing,
 * 0 otherwise.
 */
export function statusExitCode(problems: readonly Problem[]): ExitCode {
  if (problems.some((p) => p.kind === 'database_down' || p.kind === 'store_unreadable'))
    return EXIT.UNAVAILABLE;
  if (problems.length) return EXIT.FAILURE;
  return EXIT.OK;
}

export function addStatusCommand(program: Command): void {
  addConfigOptions(
    program
      .command('status')
      .description(
        'what the landing page shows: pg_up, the last good backup of each database (age, size, verified), the last drill, the next runs, the collectors (exit 0; 1 when a backup is overdue or missing or its last drill failed; 69 when the database or the store cannot be reached)',
      )
      .option('--json', 'print JSON'),
  ).action(async (opts: Record<string, unknown>) => {
    const { loaded, logger } = commandConfig(opts);
    const summary = await buildStatus(loaded.config, logger);
    const exitCode = statusExitCode(summary.problems);
    for (const p of summary.problems)
      process.stderr.write(`pg-maintd: ${printable(p.message)}\n  fix: ${printable(p.fix)}\n`);
    process.stdout.write(
      opts.json === true ? `${JSON.stringify({ ...summary, exitCode }, null, 2)}\n` : renderText(summary),
    );
    process.exitCode = exitCode;
  });
}

/** One look at the store and the database, and the schedules' next slots. */
async function buildStatus(config: Config, logger: Logger): Promise<StatusSummary> {
  const storage = await createStorage(config);
  const registry = new Registry();
  const poller = pollerFor(config, registry, logger);
  try {
    const [backups, db] = await Promise.all([listBackups(config, storage), probe(poller)]);
    return summarize({
      source: 'command',
      now: new Date(),
      database: db,
      store: { description: storage.description },
      backupSchedule: { cron: config.backup.schedule, timezone: config.backup.timezone },
      backups,
      jobs: nextRuns(config),
      collectors: db.collectors,
    });
  } finally {
    await poller.closeConnections();
    storage.close();
  }
}

async function listBackups(config: Config, storage: Awaited<ReturnType<typeof createStorage>>) {
  const catalog = catalogFor(config, storage);
  const facts: BackupFacts[] = [];
  for (const database of config.backup.databases) {
    try {
      facts.push(backupFactsOf(database, await catalog.list(database), new Date()));
    } catch (err) {
      facts.push({ ...unknownFacts(database), listError: errorMessage(err).split('\n')[0]!.slice(0, 300) });
    }
  }
  return facts;
}

/** pg_up from one connection; with the database up, each collector polled once for its health. */
async function probe(
  poller: Poller,
): Promise<{ up: boolean; target: string; error: string | null; collectors: CollectorHealth[] | null }> {
  const target = poller.pool.description;
  try {
    const client = await poller.pool.connect();
    client.release();
  } catch (err) {
    return { up: false, target, error: explainConnectionError(err, target).message, collectors: null };
  }
  await poller.pollAll();
  return { up: poller.up, target, error: null, collectors: poller.collectorHealth() };
}

/** The next slot of each scheduled job, as the daemon's scheduler would compute it now. */
function nextRuns(config: Config) {
  const scheduler = new Scheduler({ maxStallMs: 0 });
  const never = () => Promise.resolve();
  const tz = config.backup.timezone;
  scheduler.addJob({ name: 'backup', cron: config.backup.schedule, timezone: tz, run: never });
  scheduler.addJob({ name: 'verify', cron: config.verify.schedule, timezone: tz, run: never });
  scheduler.addJob({ name: MAINTENANCE_JOB, cron: config.maintenance.schedule, timezone: tz, run: never });
  return scheduler.upcoming();
}

/** The summary for a terminal: aligned columns, names made printable. */
export function renderText(s: StatusSummary): string {
  const out: string[] = [];
  const up = s.database.up;
  out.push(`pg-maintd ${s.version} status, as of ${instant(s.generatedAt)}`, '');
  out.push(
    `database  ${printable(s.database.target)}  ${up === null ? 'pg_up unknown' : up ? 'pg_up 1' : `pg_up 0${s.database.error ? `: ${printable(s.database.error)}` : ''}`}`,
  );
  out.push(`store     ${printable(s.store.description)}`, '');
  out.push('Last good backup');
  out.push(
    columns([
      ['DATABASE', 'AGE', 'SIZE', 'VERIFIED', 'STORED', 'STATE', 'KEY'],
      ...s.backups.map((b) => {
        const n = b.newest;
        const state = b.listError
          ? `store unreadable: ${b.listError}`
          : b.listedAt === null
            ? 'unknown'
            : !n
              ? 'NO GOOD BACKUP'
              : b.overdue
                ? `OVERDUE since ${instant(b.overdueAt!)}`
                : b.overdueAt
                  ? 'within schedule'
                  : 'not judged (schedule off)';
        return [
          b.database,
          b.ageSeconds === null ? '-' : `${duration(b.ageSeconds)} ago`,
          n ? size(n.sizeBytes) : '-',
          n ? verifiedText(b) : '-',
          b.listedAt ? String(b.stored) : '-',
          state,
          n ? n.key : '-',
        ];
      }),
    ]),
    '',
  );
  out.push('Last restore drill');
  out.push(
    columns([
      ['DATABASE', 'WHEN', 'RESULT', 'BACKUP'],
      ...s.backups.map((b) => {
        const d = b.lastDrill;
        return d
          ? [b.database, instant(d.at), drillResultText(d), d.key]
          : [b.database, b.listedAt ? 'none recorded' : 'unknown', '-', '-'];
      }),
    ]),
    '',
  );
  out.push('Next runs');
  out.push(
    s.jobs.length
      ? columns([
          ['JOB', 'SCHEDULE', 'NEXT RUN', 'IN'],
          ...s.jobs.map((j) => [
            j.job,
            `${j.schedule} (${j.timezone})`,
            j.next ? instant(j.next) : 'none',
            j.inSeconds === null ? '-' : duration(j.inSeconds),
          ]),
        ])
      : 'no job is scheduled (every schedule is off)',
    '',
  );
  out.push('Metrics collectors');
  out.push(
    s.collectors
      ? columns([
          ['COLLECTOR', 'HEALTH', 'DURATION', 'ERROR'],
          ...s.collectors.map((c) => [
            c.collector,
            c.ok === null ? 'not polled' : c.ok ? 'ok' : 'FAILING',
            c.durationSeconds === null ? '-' : `${(c.durationSeconds * 1000).toFixed(1)} ms`,
            c.error ?? '',
          ]),
        ])
      : 'not polled: the database cannot be reached',
    '',
  );
  if (s.problems.length) {
    out.push('Needs attention');
    for (const p of s.problems) out.push(`  - ${printable(p.message)}`, `    fix: ${printable(p.fix)}`);
  } else out.push('No problem found: the database is up and every newest backup is within its schedule.');
  return `${out.join('\n')}\n`;
}

function columns(rows: string[][]): string {
  const cells = rows.map((r) => r.map(printable));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
