/**
 * The landing page at `/`: where to go (/metrics, /healthz, /readyz) and, at a glance, the status
 * summary. Plain HTML with inline CSS: no script, no external asset, readable without JavaScript.
 * Every value is escaped: database names, keys and error messages are text from outside.
 */
import { drillResultText, duration, instant, size, verifiedText } from '../status/format.js';
import type { BackupStatus, StatusSummary } from '../status/summary.js';
import { VERSION } from '../core/version.js';

const CSS = `
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1b1f23;background:#fff}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:1.8rem 0 .5rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600}code{font:13px ui-monospace,monospace;word-break:break-all}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.unknown{color:#9a6700;font-weight:600}
.problems{border:2px solid #cf222e;background:#ffebe9;padding:.6rem 1rem;border-radius:6px}
.allgood{border:2px solid #1a7f37;background:#dafbe1;padding:.6rem 1rem;border-radius:6px}
.muted{color:#57606a}`;

/** Text made safe for HTML, as element content and in a quoted attribute; control characters shown as escapes. */
export function escapeHtml(value: unknown): string {
  return (
    String(value)
      // eslint-disable-next-line no-control-regex
      .replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&#39;')
  );
}

const e = escapeHtml;
const cls = (kind: 'ok' | 'bad' | 'unknown', text: string) => `<span class="${kind}">${e(text)}</span>`;

export function renderLandingPage(summary?: StatusSummary): string {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>pg-maintd</title><style>${CSS}</style></head>
<body>
<h1>pg-maintd ${e(VERSION)}</h1>
<p>Backups, metrics, migrations and maintenance for a PostgreSQL database.</p>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: liveness</li>
<li><a href="readyz">/readyz</a>: readiness (the database answers)</li>
${summary ? '<li><a href="status">/status</a>: this summary as JSON</li>\n' : ''}</ul>
${summary ? statusSections(summary) : ''}</body>
</html>
`;
}

function statusSections(s: StatusSummary): string {
  return [
    `<p class="muted">As of ${e(instant(s.generatedAt))}, from what the daemon holds in memory (the page never queries the database or the store); reload for newer.</p>`,
    problems(s),
    database(s),
    backups(s),
    drills(s),
    jobs(s),
    collectors(s),
  ].join('\n');
}

function problems(s: StatusSummary): string {
  if (!s.problems.length)
    return '<p class="allgood" id="problems">No problem found: the database is up and every newest backup is within its schedule.</p>';
  return `<div class="problems" id="problems"><strong>Needs attention</strong><ul>${s.problems
    .map((p) => `<li>${e(p.message)}<br><span class="muted">fix: ${e(p.fix)}</span></li>`)
    .join('')}</ul></div>`;
}

function table(id: string, head: string[], rows: string[][]): string {
  return `<table id="${id}"><thead><tr>${head.map((h) => `<th>${e(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

function database(s: StatusSummary): string {
  const up = s.database.up;
  const state =
    up === null
      ? cls('unknown', 'unknown yet')
      : up
        ? cls('ok', 'pg_up 1: the database answers')
        : cls('bad', `pg_up 0: cannot connect${s.database.error ? ` (${s.database.error})` : ''}`);
  return `<h2>Database</h2>${table('database', ['Database', 'State'], [[`<code>${e(s.database.target)}</code>`, state]])}`;
}

function backupState(b: BackupStatus): string {
  if (b.listError && !b.newest) return cls('bad', `store unreadable: ${b.listError}`);
  if (b.listedAt === null) return cls('unknown', 'unknown yet (the store has not been read since start)');
  if (!b.newest) return cls('bad', 'no good backup stored');
  const parts = [
    b.overdue
      ? cls('bad', `OVERDUE since ${instant(b.overdueAt!)}`)
      : b.overdueAt
        ? cls('ok', `within schedule (overdue after ${instant(b.overdueAt)})`)
        : cls('unknown', 'age not judged (BACKUP_SCHEDULE off)'),
  ];
  if (b.listError) parts.push(cls('bad', `last listing failed: ${b.listError}`));
  return parts.join('<br>');
}

function backups(s: StatusSummary): string {
  const rows = s.backups.map((b) => {
    const n = b.newest;
    const listed = b.listedAt ? `<br><span class="muted">store read ${e(instant(b.listedAt))}</span>` : '';
    return [
      `<code>${e(b.database)}</code>`,
      n ? `<code>${e(n.key)}</code><br><span class="muted">finished ${e(instant(n.finishedAt))}</span>` : '-',
      b.ageSeconds === null ? '-' : e(`${duration(b.ageSeconds)} ago`),
      n ? e(size(n.sizeBytes)) : '-',
      n ? cls(b.verified ? 'ok' : n.drill ? 'bad' : 'unknown', verifiedText(b)) : '-',
      b.listedAt ? e(String(b.stored)) : '-',
      backupState(b) + listed,
    ];
  });
  return `<h2>Last good backup</h2>${table(
    'backups',
    ['Database', 'Newest good backup', 'Age', 'Size', 'Verified', 'Stored', 'State'],
    rows,
  )}`;
}

function drills(s: StatusSummary): string {
  const rows = s.backups.map((b) => {
    const d = b.lastDrill;
    if (!d)
      return [
        `<code>${e(b.database)}</code>`,
        b.listedAt ? 'none recorded' : cls('unknown', 'unknown yet'),
        '-',
        '-',
      ];
    return [
      `<code>${e(b.database)}</code>`,
      e(instant(d.at)),
      cls(d.result === 'ok' ? 'ok' : d.result === 'failed' ? 'bad' : 'unknown', drillResultText(d)),
      `<code>${e(d.key)}</code>`,
    ];
  });
  return `<h2>Last restore drill</h2>${table('drills', ['Database', 'When', 'Result', 'Backup'], rows)}`;
}

function jobs(s: StatusSummary): string {
  if (!s.jobs.length) return '<h2>Next runs</h2><p>No job is scheduled (every schedule is off).</p>';
  const rows = s.jobs.map((j) => [
    e(j.job),
    `<code>${e(j.schedule)}</code> <span class="muted">${e(j.timezone)}</span>`,
    j.next ? e(instant(j.next)) : 'none',
    j.inSeconds === null ? '-' : e(`in ${duration(j.inSeconds)}`),
  ]);
  return `<h2>Next runs</h2>${table('jobs', ['Job', 'Schedule', 'Next run', 'In'], rows)}`;
}

function collectors(s: StatusSummary): string {
  if (!s.collectors) return '<h2>Metrics collectors</h2><p>Not polled: the database cannot be reached.</p>';
  const rows = s.collectors.map((c) => [
    e(c.collector),
    c.ok === null ? cls('unknown', 'not polled yet') : c.ok ? cls('ok', 'ok') : cls('bad', 'failing'),
    c.lastSuccessAt ? e(instant(c.lastSuccessAt)) : 'never',
    c.lastFailureAt ? e(instant(c.lastFailureAt)) : 'never',
    c.durationSeconds === null ? '-' : e(`${(c.durationSeconds * 1000).toFixed(1)} ms`),
    e(`every ${duration(c.intervalSeconds)}`),
    c.error ? `<code>${e(c.error)}</code>` : '',
  ]);
  return `<h2>Metrics collectors</h2>${table(
    'collectors',
    ['Collector', 'Health', 'Last success', 'Last failure', 'Duration', 'Interval', 'Error'],
    rows,
  )}`;
}
