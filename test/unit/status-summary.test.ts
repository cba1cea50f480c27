// The summary's judgements (when a backup is overdue) and the landing page's escaping.
import { describe, expect, it } from 'vitest';
import { escapeHtml, renderLandingPage } from '../../src/http/landing-page.js';
import { overdueAt, summarize, type NewestBackup } from '../../src/status/summary.js';

const backup = (startedAt: string, durationSeconds = 60, tick: string | null = null): NewestBackup => ({
  key: 'app/app_x.sql.gz',
  startedAt,
  finishedAt: new Date(Date.parse(startedAt) + durationSeconds * 1000).toISOString(),
  tick,
  sizeBytes: 1,
  durationSeconds,
  drill: null,
});

describe('overdueAt', () => {
  it('is the next slot after the backup plus an hour (or twice its duration) for a daily schedule', () => {
    const daily = { cron: '0 3 * * *', timezone: 'UTC' };
    expect(overdueAt(backup('2025-01-10T03:00:05.000Z'), daily)?.toISOString()).toBe(
      '2025-01-11T04:00:00.000Z',
    );
    // a backup that takes 2 h gets 4 h
    expect(overdueAt(backup('2025-01-10T03:00:05.000Z', 7200), daily)?.toISOString()).toBe(
      '2025-01-11T07:00:00.000Z',
    );
    // the slot it ran for, not its start, is what the next slot follows
    expect(
      overdueAt(backup('2025-01-10T03:00:01.000Z', 60, '2025-01-10T03:00:00.000Z'), daily)?.toISOString(),
    ).toBe('2025-01-11T04:00:00.000Z');
  });

  it('gives a frequent schedule one period of grace, and judges nothing when the schedule is off', () => {
    expect(
      overdueAt(backup('2025-01-10T03:00:00.000Z', 1), {
        cron: '*/5 * * * *',
        timezone: 'UTC',
      })?.toISOString(),
    ).toBe('2025-01-10T03:10:00.000Z');
    expect(overdueAt(backup('2025-01-10T03:00:00.000Z'), { cron: 'off', timezone: 'UTC' })).toBeUndefined();
  });
});

describe('the landing page', () => {
  it('escapes every character that could open markup or an attribute, and shows control characters', () => {
    expect(escapeHtml(`<a href="x" onclick='y'>&\u0007`)).toBe(
      '&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;\\x07',
    );
  });

  it('renders a hostile name, key and error as text', () => {
    const hostile = '<img src=x onerror=alert(1)>';
    const html = renderLandingPage(
      summarize({
        source: 'daemon',
        now: new Date('2025-01-10T04:00:00Z'),
        database: { up: false, target: hostile, error: `"><script>alert(2)</script>` },
        store: { description: hostile },
        backupSchedule: { cron: '0 3 * * *', timezone: 'UTC' },
        backups: [
          {
            database: hostile,
            listedAt: '2025-01-10T04:00:00.000Z',
            listError: null,
            stored: 1,
            newest: { ...backup('2025-01-10T03:00:00.000Z'), key: `${hostile}/k` },
            lastDrill: null,
          },
        ],
        jobs: [{ job: 'backup', cron: '0 3 * * *', timezone: 'UTC', next: new Date('2025-01-11T03:00:00Z') }],
        collectors: [
          {
            collector: 'locks',
            ok: false,
            lastSuccessAt: null,
            lastFailureAt: '2025-01-10T04:00:00.000Z',
            error: hostile,
            durationSeconds: 0.01,
            intervalSeconds: 15,
          },
        ],
      }),
    );
    expect(html).not.toMatch(/<img|<script/);
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('pg_up 0');
  });
});

describe('problems', () => {
  const input = (lastDrill: { result: 'ok' | 'failed' | 'inconclusive'; reason: string | null } | null) =>
    summarize({
      source: 'command',
      now: new Date('2025-01-10T04:00:00Z'),
      database: { up: true, target: 'app@db:5432/app', error: null },
      store: { description: '/backups' },
      backupSchedule: { cron: '0 3 * * *', timezone: 'UTC' },
      backups: [
        {
          database: 'app',
          listedAt: '2025-01-10T04:00:00.000Z',
          listError: null,
          stored: 1,
          newest: backup('2025-01-10T03:00:00.000Z'),
          lastDrill: lastDrill && {
            key: 'app/app_x.sql.gz',
            at: '2025-01-10T03:30:00.000Z',
            tablesCompared: 3,
            mismatches: lastDrill.result === 'failed' ? 1 : 0,
            ...lastDrill,
          },
        },
      ],
      jobs: [],
      collectors: [],
    }).problems;

  it('names a last drill that failed or compared nothing, with what to do', () => {
    expect(input(null)).toEqual([]);
    expect(input({ result: 'ok', reason: null })).toEqual([]);
    const [failed] = input({ result: 'failed', reason: 'public.tasks: 10 rows, restored 9' });
    expect(failed).toMatchObject({ kind: 'drill_failed', database: 'app' });
    expect(failed!.message).toContain('public.tasks: 10 rows, restored 9');
    expect(failed!.fix).toContain('pg-maintd verify --key');
    expect(input({ result: 'inconclusive', reason: null })[0]?.kind).toBe('drill_failed');
  });
});
