/** Renders a doctor report: a readable list for people, JSON for machines. */
import type { DoctorReport } from './doctor.js';
import type { Finding, Status } from './finding.js';
import { RELOAD_SQL } from './finding.js';

const LABEL: Record<Status, string> = { ok: 'ok', warn: 'WARN', fail: 'FAIL', info: 'info' };
const WIDTH = 100;
const INDENT = ' '.repeat(8);

/** Wraps prose to WIDTH: the first line starts with `first`, the others with `indent`. */
function wrap(text: string, indent: string, first = indent): string {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const w of text.split(' ')) {
    if (!empty && line.length + 1 + w.length > WIDTH) {
      lines.push(line);
      line = indent;
      empty = true;
    }
    line += empty ? w : ` ${w}`;
    empty = false;
  }
  lines.push(line);
  return lines.join('\n');
}

function renderFinding(f: Finding, idWidth: number): string {
  const head = `${LABEL[f.status].padEnd(6)}  ${f.id.padEnd(idWidth)}  ${f.found}`;
  if (f.status === 'ok') return head;
  const out = [
    head,
    wrap(`expected: ${f.title}`, `${INDENT}          `, INDENT),
    wrap(`why: ${f.why}`, `${INDENT}     `, INDENT),
  ];
  const fix = f.fix;
  if (fix) {
    // SQL stays on one line each, to be copied whole; prose is wrapped.
    const lines = [
      ...(fix.sql ?? []).map((text) => ({ text, sql: true })),
      ...(fix.steps ?? []).map((text) => ({ text, sql: false })),
    ];
    if (fix.restart) lines.push({ text: '(needs a restart)', sql: false });
    if (fix.remedies?.length)
      lines.push({ text: '(pg-maintd doctor --apply does this when the role may)', sql: false });
    lines.forEach((l, i) => {
      const first = i === 0 ? `${INDENT}fix: ` : `${INDENT}     `;
      out.push(l.sql ? `${first}${l.text}` : wrap(l.text, `${INDENT}     `, first));
    });
  }
  return out.join('\n');
}

function summaryLine(r: DoctorReport): string {
  const s = r.summary;
  return `${s.fail} failed, ${s.warn} warnings, ${s.ok} ok, ${s.info} info: exit ${r.exitCode}`;
}

function renderApply(r: DoctorReport): string[] {
  const a = r.apply;
  if (!a) return [];
  const out: string[] = ['', '--apply:'];
  if (a.applied.length + a.notAllowed.length + a.failed.length === 0)
    out.push('  nothing to apply: no safe fix is pending');
  for (const x of a.applied) out.push(`  applied      ${x.sql}  (${x.id})`);
  if (a.applied.some((x) => x.sql.startsWith('ALTER SYSTEM')))
    out.push(
      `  reloaded     ${RELOAD_SQL}  ${a.reloaded ? '(configuration re-read)' : '(not yet re-read after 5 s)'}`,
    );
  for (const x of a.failed) out.push(`  FAILED       ${x.sql}  (${x.id}): ${x.error}`);
  for (const x of a.notAllowed)
    out.push(wrap(`not allowed  ${x.id}: ${r.role} lacks ${x.missing}`, `${' '.repeat(15)}`, '  '));
  if (a.notAllowed.length) {
    const sql = [...new Set(a.notAllowed.flatMap((x) => x.sql).filter((s) => s !== RELOAD_SQL))];
    if (a.notAllowed.some((x) => x.sql.includes(RELOAD_SQL))) sql.push(RELOAD_SQL);
    out.push('  nothing of the above was changed. SQL for a DBA (as a superuser):');
    for (const s of sql) out.push(`    ${s}`);
    const all = [...new Set(a.notAllowed.flatMap((x) => x.grants))];
    const grants = [
      ...all.filter((g) => !g.includes('pg_reload_conf')),
      ...all.filter((g) => g.includes('pg_reload_conf')),
    ];
    if (grants.length) {
      out.push(`  or let ${r.role} apply them itself (PostgreSQL 15+):`);
      for (const g of grants) out.push(`    ${g}`);
    }
  }
  if (a.manual.length) {
    out.push('  manual steps (--apply never runs these):');
    for (const m of a.manual) {
      out.push(`    ${m.id}${m.restart ? ' (needs a restart)' : ''}:`);
      for (const l of m.sql) out.push(`      ${l}`);
      for (const l of m.steps) out.push(wrap(l, ' '.repeat(8), ' '.repeat(6)));
    }
  }
  if (a.changes.length) {
    out.push('', 'before -> after:');
    const w = Math.max(...a.changes.map((c) => c.id.length));
    for (const c of a.changes)
      out.push(
        `  ${c.id.padEnd(w)}  ${LABEL[c.before.status]} ${c.before.found}  ->  ${LABEL[c.after.status]} ${c.after.found}`,
      );
  } else if (a.applied.length) out.push('', 'before -> after: no check changed');
  return out;
}

export function renderText(r: DoctorReport): string {
  const who = `role ${r.role}${r.superuser ? ' (superuser)' : ''}`;
  const idWidth = Math.max(...r.findings.map((f) => f.id.length));
  const lines = [
    `pg-maintd doctor: ${r.target}, PostgreSQL ${r.server.version}, ${who}`,
    ...renderApply(r),
    '',
    `${'STATUS'.padEnd(6)}  ${'CHECK'.padEnd(idWidth)}  FOUND`,
    ...r.findings.map((f) => renderFinding(f, idWidth)),
    '',
    summaryLine(r),
  ];
  return `${lines.join('\n')}\n`;
}

function findingJson(f: Finding) {
  return {
    id: f.id,
    status: f.status,
    title: f.title,
    found: f.found,
    why: f.why,
    fix: f.fix
      ? {
          sql: f.fix.sql ?? [],
          steps: f.fix.steps ?? [],
          restart: f.fix.restart === true,
          applicable: (f.fix.remedies?.length ?? 0) > 0,
        }
      : null,
  };
}

export function renderJson(r: DoctorReport): string {
  const body = {
    target: r.target,
    server: r.server,
    role: r.role,
    superuser: r.superuser,
    exitCode: r.exitCode,
    summary: r.summary,
    findings: r.findings.map(findingJson),
    ...(r.apply
      ? {
          apply: {
            applied: r.apply.applied,
            reloaded: r.apply.reloaded,
            failed: r.apply.failed,
            notAllowed: r.apply.notAllowed,
            manual: r.apply.manual,
            changes: r.apply.changes,
          },
        }
      : {}),
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}
