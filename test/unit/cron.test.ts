// The cron module: what it accepts (node-cron 4's language, which configurations were validated
// against), what it refuses and why, and the slots it computes in a zone's wall-clock time.
import { describe, expect, it } from 'vitest';
import { loadConfig, ConfigError } from '../../src/config/load.js';
import { CronError, parseCron } from '../../src/cron/cron.js';
import {
  firstInstantAtOrAfter,
  highestWallClock,
  localMs,
  offsetAt,
  weekday,
} from '../../src/cron/wall-clock.js';
import { noDefaults } from '../support/backup.js';

const MIN = 60_000;
const DAY = 86_400_000;
const iso = (t: number | undefined) =>
  t === undefined ? 'none' : new Date(t).toISOString().replace('.000Z', 'Z');

function slots(expression: string, zone: string, from: string, count: number): string[] {
  const cron = parseCron(expression);
  const out: string[] = [];
  let t: number | undefined = Date.parse(from);
  for (let i = 0; i < count && t !== undefined; i++) out.push(iso((t = cron.next(t, zone))));
  return out;
}

function refusal(expression: string): string {
  try {
    parseCron(expression);
  } catch (err) {
    expect(err).toBeInstanceOf(CronError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${expression}`);
}

describe('cron: the expressions node-cron 4 accepted keep their meaning', () => {
  // The first three slots after 2026-01-01T00:00Z in UTC, as node-cron 4.6's own matcher computed
  // them (generated once with it; a fuzz of 200,000 expressions found no difference in UTC).
  const PARITY: Array<[string, string[]]> = [
    ['0 2 * * *', ['2026-01-01T02:00:00Z', '2026-01-02T02:00:00Z', '2026-01-03T02:00:00Z']],
    ['*/20 * * * * *', ['2026-01-01T00:00:20Z', '2026-01-01T00:00:40Z', '2026-01-01T00:01:00Z']],
    ['15,45 */10 * * * *', ['2026-01-01T00:00:15Z', '2026-01-01T00:00:45Z', '2026-01-01T00:10:15Z']],
    ['0 0 * * 0', ['2026-01-04T00:00:00Z', '2026-01-11T00:00:00Z', '2026-01-18T00:00:00Z']],
    ['0 0 * * 7', ['2026-01-04T00:00:00Z', '2026-01-11T00:00:00Z', '2026-01-18T00:00:00Z']],
    ['30 3 * * 1-5', ['2026-01-01T03:30:00Z', '2026-01-02T03:30:00Z', '2026-01-05T03:30:00Z']],
    ['0 4 * * mon-fri', ['2026-01-01T04:00:00Z', '2026-01-02T04:00:00Z', '2026-01-05T04:00:00Z']],
    ['0 4 * * MON,wed,Fri', ['2026-01-02T04:00:00Z', '2026-01-05T04:00:00Z', '2026-01-07T04:00:00Z']],
    ['0 4 * * sunday', ['2026-01-04T04:00:00Z', '2026-01-11T04:00:00Z', '2026-01-18T04:00:00Z']],
    ['0 4 1 jan *', ['2026-01-01T04:00:00Z', '2027-01-01T04:00:00Z', '2028-01-01T04:00:00Z']],
    ['0 4 1 JAN-MAR *', ['2026-01-01T04:00:00Z', '2026-02-01T04:00:00Z', '2026-03-01T04:00:00Z']],
    ['0 4 1 january *', ['2026-01-01T04:00:00Z', '2027-01-01T04:00:00Z', '2028-01-01T04:00:00Z']],
    ['0 22-2 * * *', ['2026-01-01T01:00:00Z', '2026-01-01T02:00:00Z', '2026-01-01T22:00:00Z']],
    ['0 0 * * fri-mon', ['2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z', '2026-01-04T00:00:00Z']],
    ['0 0 * * 5-7', ['2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z', '2026-01-04T00:00:00Z']],
    ['0 0 L * *', ['2026-01-31T00:00:00Z', '2026-02-28T00:00:00Z', '2026-03-31T00:00:00Z']],
    ['0 0 l * *', ['2026-01-31T00:00:00Z', '2026-02-28T00:00:00Z', '2026-03-31T00:00:00Z']],
    ['0 0 LW * *', ['2026-01-30T00:00:00Z', '2026-02-27T00:00:00Z', '2026-03-31T00:00:00Z']],
    ['0 0 L-2 * *', ['2026-01-29T00:00:00Z', '2026-02-26T00:00:00Z', '2026-03-29T00:00:00Z']],
    ['0 0 15W * *', ['2026-01-15T00:00:00Z', '2026-02-16T00:00:00Z', '2026-03-16T00:00:00Z']],
    ['0 0 1w * *', ['2026-02-02T00:00:00Z', '2026-03-02T00:00:00Z', '2026-04-01T00:00:00Z']],
    ['0 0 * * 5L', ['2026-01-30T00:00:00Z', '2026-02-27T00:00:00Z', '2026-03-27T00:00:00Z']],
    ['0 0 * * fri#2', ['2026-01-09T00:00:00Z', '2026-02-13T00:00:00Z', '2026-03-13T00:00:00Z']],
    ['0 0 ? * 1', ['2026-01-05T00:00:00Z', '2026-01-12T00:00:00Z', '2026-01-19T00:00:00Z']],
    ['0 0 1 * ?', ['2026-02-01T00:00:00Z', '2026-03-01T00:00:00Z', '2026-04-01T00:00:00Z']],
    ['@daily', ['2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z', '2026-01-04T00:00:00Z']],
    ['@HOURLY', ['2026-01-01T01:00:00Z', '2026-01-01T02:00:00Z', '2026-01-01T03:00:00Z']],
    [' @weekly ', ['2026-01-04T00:00:00Z', '2026-01-11T00:00:00Z', '2026-01-18T00:00:00Z']],
    ['@monthly', ['2026-02-01T00:00:00Z', '2026-03-01T00:00:00Z', '2026-04-01T00:00:00Z']],
    ['@yearly', ['2027-01-01T00:00:00Z', '2028-01-01T00:00:00Z', '2029-01-01T00:00:00Z']],
    ['@annually', ['2027-01-01T00:00:00Z', '2028-01-01T00:00:00Z', '2029-01-01T00:00:00Z']],
    ['@midnight', ['2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z', '2026-01-04T00:00:00Z']],
    ['0 0 1-31/5 * *', ['2026-01-06T00:00:00Z', '2026-01-11T00:00:00Z', '2026-01-16T00:00:00Z']],
    ['*/25,3 * * * *', ['2026-01-01T00:03:00Z', '2026-01-01T00:25:00Z', '2026-01-01T00:50:00Z']],
    ['0-59/90 * * * *', ['2026-01-01T01:00:00Z', '2026-01-01T02:00:00Z', '2026-01-01T03:00:00Z']],
    ['0   2  *  *  *', ['2026-01-01T02:00:00Z', '2026-01-02T02:00:00Z', '2026-01-03T02:00:00Z']],
    ['5-55/20 * * * *', ['2026-01-01T00:05:00Z', '2026-01-01T00:25:00Z', '2026-01-01T00:45:00Z']],
    ['0 0 29 2 *', ['2028-02-29T00:00:00Z', '2032-02-29T00:00:00Z', '2036-02-29T00:00:00Z']],
    ['0 0 */10 * *', ['2026-01-11T00:00:00Z', '2026-01-21T00:00:00Z', '2026-01-31T00:00:00Z']],
    ['0 */8 * * *', ['2026-01-01T08:00:00Z', '2026-01-01T16:00:00Z', '2026-01-02T00:00:00Z']],
    ['50-10/10 * * * *', ['2026-01-01T00:10:00Z', '2026-01-01T00:50:00Z', '2026-01-01T01:00:00Z']],
    ['0 0 1 11-2 *', ['2026-02-01T00:00:00Z', '2026-11-01T00:00:00Z', '2026-12-01T00:00:00Z']],
    // both day fields given: a day must match both (node-cron's rule): Friday the 13th
    ['0 0 13 * 5', ['2026-02-13T00:00:00Z', '2026-03-13T00:00:00Z', '2026-11-13T00:00:00Z']],
  ];

  it.each(PARITY)('%j', (expression, expected) => {
    expect(slots(expression, 'UTC', '2026-01-01T00:00:00Z', 3)).toEqual(expected);
  });
});

describe('cron: what is refused, and the message says what is wrong', () => {
  const REFUSED: Array<[string, RegExp]> = [
    ['', /the expression is empty/],
    [
      'every night',
      /2 fields, but a cron expression has 5: minute hour day-of-month month day-of-week, or 6/,
    ],
    ['* * *', /3 fields/],
    ['0 2 * * * * *', /7 fields/],
    ['61 * * * *', /^minute field "61": 61 is out of range; use 0-59$/],
    ['0 24 * * *', /^hour field "24": 24 is out of range; use 0-23$/],
    ['0 0 32 * *', /^day-of-month field "32": 32 is out of range; use 1-31, L, L-n, nW or LW$/],
    ['0 0 1 13 *', /^month field "13": 13 is out of range; use 1-12 or jan-dec$/],
    ['0 4 * * 8', /^day-of-week field "8": 8 is out of range; use 0-7, sun-sat, dL or d#n$/],
    ['60 * * * * *', /^second field "60"/],
    ['0 0 * * funday', /^day-of-week field "funday": "funday" is not a number or a name/],
    ['0 0 * * constructor', /"constructor" is not a number or a name/],
    ['0 0 1 smarch *', /^month field "smarch": "smarch" is not a number or a name; use 1-12 or jan-dec$/],
    ['x * * * *', /^minute field "x": "x" is not a number; use 0-59$/],
    [
      '*/0 * * * *',
      /^minute field "\*\/0": the step in "\*\/0" must be at least 1; the minute field takes 0-59, \* for every value, lists \(a,b\), ranges \(a-b\) and steps \(\*\/n, a-b\/n\)$/,
    ],
    ['*/x * * * *', /the step in "\*\/x" is not a whole number/],
    [
      '5/15 * * * *',
      /^minute field "5\/15": a step needs \* or a range before it, e.g. 5-59\/15; the minute/,
    ],
    [
      '0 0 1-2-3 * *',
      /^day-of-month field "1-2-3": "1-2-3" is not a range a-b; the day-of-month field takes 1-31, L, L-n, nW or LW, \*/,
    ],
    [
      '0 0 * 1,,2 *',
      /^month field "1,,2": a list has an empty item; the month field takes 1-12 or jan-dec, \*/,
    ],
    [
      '0 0 * * 1/2/3',
      /^day-of-week field "1\/2\/3": "1\/2\/3" has more than one "\/"; the day-of-week field takes 0-7, sun-sat/,
    ],
    [
      '0 x/2 * * *',
      /^hour field "x\/2": the step in "x\/2"|^hour field "x\/2": "x" is not a number; use 0-23$/,
    ],
    ['*/5/2 * * * *', /has more than one "\/"/],
    ['1-2-3 * * * *', /"1-2-3" is not a range a-b/],
    ['1,,2 * * * *', /a list has an empty item/],
    ['0 0 L-31 * *', /L-n with n 31 is out of range; use 1-30/],
    ['0 0 32W * *', /nW with day 32 is out of range; use 1-31/],
    ['0 0 * * 1#6', /d#n with n 6 is out of range; use 1-5/],
    ['? * * * *', /^minute field "\?"/],
    ['@reboot', /"@reboot" is not a known shorthand; use @yearly, @annually, @monthly, @weekly, @daily/],
    // node-cron took these, but they never run (it searched 100 years each time and gave up)
    ['0 0 30 2 *', /it never runs: no date matches its day-of-month, month and day-of-week fields together/],
    ['0 0 31W 4 *', /it never runs/],
    ['0 0 1 * 1#5', /it never runs/],
    // node-cron took these too: a range end out of range that its step or wrap-round hid
    ['0 0 1 3-14/13 *', /^month field "3-14\/13": 14 is out of range; use 1-12 or jan-dec$/],
    ['60-10 * * * *', /^minute field "60-10": 60 is out of range; use 0-59$/],
  ];

  it.each(REFUSED)('%j', (expression, message) => {
    expect(refusal(expression)).toMatch(message);
  });

  it('the configuration check uses the same parser and says what is wrong in the expression', () => {
    const env = {
      DATABASE_URL: 'postgresql://app@db.internal:5432/app',
      BACKUP_SCHEDULE: '0 25 * * *',
      MAINTENANCE_SCHEDULE: '0 0 30 2 *',
      BACKUP_VERIFY_SCHEDULE: '0 4 * * fri#2',
    };
    let err: unknown;
    try {
      loadConfig({ env, defaultsDir: noDefaults() });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const text = (err as ConfigError).describe();
    expect(text).toContain(
      '  - BACKUP_SCHEDULE (from environment BACKUP_SCHEDULE): got "0 25 * * *"; expected a cron expression such as "0 2 * * *", or off (hour field "25": 25 is out of range; use 0-23)',
    );
    expect(text).toMatch(/- MAINTENANCE_SCHEDULE .*got "0 0 30 2 \*".*\(it never runs: /);
    expect(text).not.toContain('BACKUP_VERIFY_SCHEDULE'); // valid: the second Friday
  });
});

describe('cron: slots in wall-clock time', () => {
  it('a day the zone skipped entirely (Pacific/Apia, 2011-12-30) runs at the first instant after the jump', () => {
    // Samoa went from UTC-10 to UTC+14 at the end of 2011-12-29: 2011-12-30 never happened there
    expect(slots('0 2 30 12 *', 'Pacific/Apia', '2011-12-01T00:00:00Z', 2)).toEqual([
      '2011-12-30T10:00:00Z', // 2011-12-31 00:00 +14
      '2012-12-29T12:00:00Z', // 2012-12-30 02:00 +14
    ]);
  });

  it('several slots in one gap make one slot, and the slots strictly increase', () => {
    // every second from 01:59:58 CET: the 3,600 seconds of 02:00-02:59 are one slot, at 03:00 CEST
    expect(slots('* * * * * *', 'Europe/Berlin', '2026-03-29T00:59:58Z', 4)).toEqual([
      '2026-03-29T00:59:59Z',
      '2026-03-29T01:00:00Z',
      '2026-03-29T01:00:01Z',
      '2026-03-29T01:00:02Z',
    ]);
  });

  it('from inside the repeated hour, the next slot is after it (a replica started then agrees)', () => {
    // 02:10 CET, the second pass of 02:00-02:59 on 2026-10-25: 02:15 CET ran as 02:15 CEST already
    expect(slots('*/15 * * * *', 'Europe/Berlin', '2026-10-25T01:10:00Z', 2)).toEqual([
      '2026-10-25T02:00:00Z', // 03:00 CET
      '2026-10-25T02:15:00Z',
    ]);
  });
});

describe('wall clock of a zone', () => {
  const at = (s: string) => Date.parse(s);
  const local = (s: string) => Date.parse(s + 'Z');

  it('reads calendar fields for every year, weekdays included', () => {
    expect(localMs(2026, 3, 29, 2, 30, 15)).toBe(local('2026-03-29T02:30:15'));
    expect(localMs(50, 1, 1)).toBe(Date.parse('0050-01-01T00:00:00Z')); // Date.UTC would say 1950
    expect(localMs(2400, 2, 29)).toBe(Date.parse('2400-02-29T00:00:00Z'));
    expect([weekday(2026, 3, 29), weekday(2026, 11, 1), weekday(2000, 1, 1)]).toEqual([0, 0, 6]);
  });

  it('knows the offsets, to the second (local mean time before 1893 in Berlin was +0:53:28)', () => {
    expect(offsetAt('Europe/Berlin', at('2026-03-29T00:59:59Z'))).toBe(3_600_000);
    expect(offsetAt('Europe/Berlin', at('2026-03-29T01:00:00Z'))).toBe(7_200_000);
    expect(offsetAt('Australia/Lord_Howe', at('2026-07-01T00:00:00Z'))).toBe(37_800_000);
    expect(offsetAt('Europe/Berlin', at('1880-01-01T00:00:00Z'))).toBe((53 * 60 + 28) * 1000);
  });

  it('maps a reading to the first instant that shows it or later', () => {
    // ordinary, repeated (first time), skipped (the jump)
    expect(firstInstantAtOrAfter('Europe/Berlin', local('2026-07-01T02:30:00'))).toBe(
      at('2026-07-01T00:30:00Z'),
    );
    expect(firstInstantAtOrAfter('Europe/Berlin', local('2026-10-25T02:30:00'))).toBe(
      at('2026-10-25T00:30:00Z'),
    );
    expect(firstInstantAtOrAfter('Europe/Berlin', local('2026-03-29T02:30:00'))).toBe(
      at('2026-03-29T01:00:00Z'),
    );
    expect(firstInstantAtOrAfter('Australia/Lord_Howe', local('2026-10-04T02:10:00'))).toBe(
      at('2026-10-03T15:30:00Z'),
    );
  });

  it('in the repeated hour, the highest reading so far is the end of its first pass', () => {
    // 02:10 CET (second pass): the clock already showed up to 02:59:59.999 CEST
    expect(highestWallClock('Europe/Berlin', at('2026-10-25T01:10:00Z'))).toBe(
      local('2026-10-25T02:59:59.999'),
    );
    // outside it, the reading itself
    expect(highestWallClock('Europe/Berlin', at('2026-10-25T02:10:00Z'))).toBe(local('2026-10-25T03:10:00'));
    expect(highestWallClock('Europe/Berlin', at('2026-10-25T00:10:00Z'))).toBe(local('2026-10-25T02:10:00'));
    expect(highestWallClock('America/New_York', at('2026-11-01T06:30:00Z'))).toBe(
      local('2026-11-01T01:59:59.999'),
    );
  });

  it('an instant a Date cannot hold has no next slot (a clock set absurdly far ahead)', () => {
    const cron = parseCron('* * * * *');
    expect(cron.next(8.64e15 - 1000, 'UTC')).toBeUndefined();
    expect(cron.next(Number.NaN, 'UTC')).toBeUndefined();
  });
});

// An independent oracle, by brute force: step through every minute around each change of offset,
// read the wall clock with Intl's own formatting, and run a slot at the first minute whose reading
// reaches a matching wall-clock minute not reached before (a reading skipped in a gap counts as
// reached at the jump; a reading shown twice is reached the first time).
const ORACLE_CASES: Array<[string, (h: number, mi: number) => boolean]> = [
  ['*/15 * * * *', (_h, mi) => mi % 15 === 0],
  ['0 2 * * *', (h, mi) => h === 2 && mi === 0],
  ['30 1 * * *', (h, mi) => h === 1 && mi === 30],
  ['0 0 * * *', (h, mi) => h === 0 && mi === 0],
  ['45 23 * * *', (h, mi) => h === 23 && mi === 45],
];

const ZONES = [
  'Europe/Berlin',
  'America/New_York',
  'Australia/Lord_Howe', // 30-minute changes
  'America/Havana', // midnight skipped and repeated
  'America/Santiago', // midnight skipped
  'Asia/Beirut', // midnight skipped
  'Antarctica/Troll', // a 2-hour change
  'America/St_Johns', // a -3:30 zone
  'Africa/Casablanca', // changes round Ramadan
  'Europe/Dublin', // "negative" summer time in the zone data
  'Pacific/Chatham', // +12:45 / +13:45
];

function wallReader(zone: string): (t: number) => number {
  const f = new Intl.DateTimeFormat('sv-SE', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
  });
  return (t) => Date.parse(f.format(t).replace(' ', 'T') + 'Z');
}

/** The minutes at which the offset changes between `from` and `to`. */
function changes(read: (t: number) => number, from: number, to: number): number[] {
  const out: number[] = [];
  const offset = (t: number) => read(t) - t;
  for (let t = from; t < to; t += 6 * 3_600_000) {
    if (offset(t) === offset(t + 6 * 3_600_000)) continue;
    let [a, b] = [t, t + 6 * 3_600_000];
    while (b - a > MIN) {
      const mid = a + Math.floor((b - a) / MIN / 2) * MIN;
      if (offset(mid) === offset(a)) a = mid;
      else b = mid;
    }
    out.push(b);
  }
  return out;
}

describe('cron: around every change of offset in 2025-2027, slots equal a brute-force oracle', () => {
  it.each(ZONES.map((z) => [z]))('%s', (zone) => {
    const read = wallReader(zone);
    const found = changes(read, Date.UTC(2025, 0, 1), Date.UTC(2028, 0, 1));
    expect(found.length, 'changes of offset found').toBeGreaterThan(0);
    for (const change of found) {
      const from = change - DAY;
      const to = change + DAY;
      for (const [expression, matches] of ORACLE_CASES) {
        const expected: string[] = [];
        let reached = read(from - MIN);
        for (let t = from; t <= to; t += MIN) {
          const wall = read(t);
          for (let l = reached + MIN; l <= wall; l += MIN) {
            const d = new Date(l);
            if (matches(d.getUTCHours(), d.getUTCMinutes())) {
              expected.push(iso(t));
              break;
            }
          }
          reached = Math.max(reached, wall);
        }
        const cron = parseCron(expression);
        const actual: string[] = [];
        for (let t = cron.next(from - MIN, zone); t !== undefined && t <= to; t = cron.next(t, zone))
          actual.push(iso(t));
        expect(actual, `${expression} in ${zone} around ${iso(change)}`).toEqual(expected);
      }
    }
  });
});
