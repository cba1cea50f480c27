/** How the page and the terminal word the summary's numbers: ages, sizes, verdicts. */
import { humanBytes } from '../core/units.js';
import type { BackupStatus, DrillFacts } from './summary.js';

/** 5400 -> "1 h 30 min": a duration as a person reads it, to the minute past an hour. */
export function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function size(bytes: number): string {
  return humanBytes(bytes);
}

/** "2025-01-31 03:00:00 UTC": an instant, to the second. */
export function instant(iso: string): string {
  return `${iso.replace('T', ' ').slice(0, 19)} UTC`;
}

/** Whether the newest backup was verified, in words. */
export function verifiedText(b: BackupStatus): string {
  const d = b.newest?.drill;
  if (!d) return 'not yet (no restore drill of it)';
  return d.result === 'ok' ? `yes (drill passed ${instant(d.at)})` : `NO: drill ${drillResultText(d)}`;
}

export function drillResultText(d: DrillFacts): string {
  const what =
    d.result === 'ok'
      ? `passed, ${d.tablesCompared} table(s) compared`
      : d.result === 'inconclusive'
        ? 'inconclusive'
        : `FAILED${d.mismatches ? `, ${d.mismatches} table(s) differ` : ''}`;
  return d.reason ? `${what}: ${d.reason}` : what;
}
