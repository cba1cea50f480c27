/**
 * The text of a cron expression, parsed into the values each field allows. What it accepts is what
 * node-cron 4 (the scheduler's earlier engine) accepted, so configurations keep validating:
 * - 5 fields (minute hour day-of-month month day-of-week), or 6 with the second first;
 * - in each field a list of `*`, a number, a range `a-b` (`b` below `a` wraps round: hours `22-2`),
 *   each with an optional step `/n`; month names (jan, january) and day names (sun, sunday) in their
 *   fields; 0 and 7 are Sunday; `?` for a whole day-of-month or day-of-week field means `*`;
 * - in the day-of-month field also `L` (last day), `L-n` (n days before it), `nW` (the weekday
 *   nearest day n, within the month) and `LW` (the last weekday); in the day-of-week field `dL` (the
 *   last such day of the month) and `d#n` (its n-th, 1-5);
 * - the shorthands @yearly @annually @monthly @weekly @daily @midnight @hourly.
 * A day must match both day fields (node-cron's rule; classic cron runs when either matches).
 */

export class CronError extends Error {
  override name = 'CronError';
}

export interface DayOfMonth {
  /** Index 1-31. */
  days: boolean[];
  last: boolean;
  /** `L-n`: n days before the last. */
  beforeLast: number[];
  /** `nW`: the weekday nearest day n. */
  nearestWeekday: number[];
  lastWeekday: boolean;
}

export interface DayOfWeek {
  /** Index 0-6, 0 = Sunday. */
  days: boolean[];
  /** `d#n`. */
  nth: Array<{ day: number; n: number }>;
  /** `dL`. */
  last: number[];
}

export interface CronFields {
  second: boolean[];
  minute: boolean[];
  hour: boolean[];
  dayOfMonth: DayOfMonth;
  /** Index 1-12. */
  month: boolean[];
  dayOfWeek: DayOfWeek;
}

const SHORTHANDS = new Map([
  ['@yearly', '0 0 1 1 *'],
  ['@annually', '0 0 1 1 *'],
  ['@monthly', '0 0 1 * *'],
  ['@weekly', '0 0 * * 0'],
  ['@daily', '0 0 * * *'],
  ['@midnight', '0 0 * * *'],
  ['@hourly', '0 * * * *'],
]);

const MONTHS = 'january february march april may june july august september october november december';
const DAYS = 'sunday monday tuesday wednesday thursday friday saturday';

function names(list: string): Map<string, number> {
  const out = new Map<string, number>();
  list.split(' ').forEach((name, i) => {
    out.set(name, i);
    out.set(name.slice(0, 3), i);
  });
  return out;
}

interface Spec {
  label: string;
  min: number;
  max: number;
  /** The highest number that may be written (7, Sunday again, in the day-of-week field). */
  top: number;
  names?: Map<string, number>;
  /** Added to a name's index. */
  nameBase?: number;
  hint: string;
}

const SPECS = {
  second: { label: 'second', min: 0, max: 59, top: 59, hint: '0-59' },
  minute: { label: 'minute', min: 0, max: 59, top: 59, hint: '0-59' },
  hour: { label: 'hour', min: 0, max: 23, top: 23, hint: '0-23' },
  dayOfMonth: { label: 'day-of-month', min: 1, max: 31, top: 31, hint: '1-31, L, L-n, nW or LW' },
  month: {
    label: 'month',
    min: 1,
    max: 12,
    top: 12,
    names: names(MONTHS),
    nameBase: 1,
    hint: '1-12 or jan-dec',
  },
  dayOfWeek: {
    label: 'day-of-week',
    min: 0,
    max: 6,
    top: 7,
    names: names(DAYS),
    nameBase: 0,
    hint: '0-7, sun-sat, dL or d#n',
  },
} satisfies Record<string, Spec>;

class FieldError extends Error {}

/** A number or a name of the field, within what may be written. */
function value(token: string, spec: Spec): number {
  if (/^\d+$/.test(token)) {
    const n = Number(token);
    if (n < spec.min || n > spec.top) throw new FieldError(`${n} is out of range; use ${spec.hint}`);
    return n;
  }
  const named = spec.names?.get(token.toLowerCase());
  if (named !== undefined) return named + (spec.nameBase ?? 0);
  throw new FieldError(
    `"${token}" is not ${spec.names ? 'a number or a name' : 'a number'}; use ${spec.hint}`,
  );
}

/** One item of a list: `*`, `n`, `a-b`, each with an optional `/step`. */
function addItem(item: string, spec: Spec, into: boolean[]) {
  const slash = item.split('/');
  if (slash.length > 2) throw new FieldError(`"${item}" has more than one "/"`);
  const [range, stepText] = slash as [string, string | undefined];
  let step = 1;
  if (stepText !== undefined) {
    if (!/^\d+$/.test(stepText)) throw new FieldError(`the step in "${item}" is not a whole number`);
    step = Number(stepText);
    if (step < 1) throw new FieldError(`the step in "${item}" must be at least 1`);
  }
  let lo: number;
  let hi: number;
  if (range === '*') [lo, hi] = [spec.min, spec.max];
  else if (range.includes('-')) {
    const ends = range.split('-');
    if (ends.length !== 2 || !ends[0] || !ends[1]) throw new FieldError(`"${item}" is not a range a-b`);
    [lo, hi] = [value(ends[0], spec), value(ends[1], spec)];
  } else {
    lo = hi = value(range, spec);
    if (stepText !== undefined)
      throw new FieldError(`a step needs * or a range before it, e.g. ${lo}-${spec.max}/${step}`);
  }
  const size = spec.max - spec.min + 1;
  // a range written backwards wraps round the end of the field (22-2: 22, 23, 0, 1, 2)
  const span = lo <= hi ? hi - lo : (((hi - lo) % size) + size) % size;
  for (let offset = 0; offset <= span; offset += step) {
    const v = lo + offset;
    into[v > spec.max ? v - size : v] = true;
  }
}

function parseList(text: string, spec: Spec, special?: (item: string) => boolean): boolean[] {
  const into = new Array<boolean>(spec.max + 1).fill(false);
  for (const item of text.split(',')) {
    if (item === '') throw new FieldError('a list has an empty item');
    if (!special?.(item)) addItem(item, spec, into);
  }
  return into;
}

function bounded(text: string, lo: number, hi: number, what: string): number {
  const n = Number(text);
  if (n < lo || n > hi) throw new FieldError(`${what} ${n} is out of range; use ${lo}-${hi}`);
  return n;
}

function dayOfMonth(text: string): DayOfMonth {
  const out: DayOfMonth = { days: [], last: false, beforeLast: [], nearestWeekday: [], lastWeekday: false };
  out.days = parseList(text === '?' ? '*' : text, SPECS.dayOfMonth, (item) => {
    const upper = item.toUpperCase();
    let m: RegExpExecArray | null;
    if (upper === 'L') out.last = true;
    else if (upper === 'LW') out.lastWeekday = true;
    else if ((m = /^L-(\d+)$/.exec(upper)))
      out.beforeLast.push(bounded(m[1]!, 1, 30, `"${item}": L-n with n`));
    else if ((m = /^(\d+)W$/.exec(upper)))
      out.nearestWeekday.push(bounded(m[1]!, 1, 31, `"${item}": nW with day`));
    else return false;
    return true;
  });
  return out;
}

function dayOfWeek(text: string): DayOfWeek {
  const spec = SPECS.dayOfWeek;
  const out: DayOfWeek = { days: [], nth: [], last: [] };
  out.days = parseList(text === '?' ? '*' : text, spec, (item) => {
    let m: RegExpExecArray | null;
    if ((m = /^(\w+)#(\d+)$/.exec(item)))
      out.nth.push({ day: value(m[1]!, spec) % 7, n: bounded(m[2]!, 1, 5, `"${item}": d#n with n`) });
    else if ((m = /^(\w+)L$/i.exec(item)) && m[1]) out.last.push(value(m[1], spec) % 7);
    else return false;
    return true;
  });
  if (out.days.length > 7) out.days[0] = out.days[0]! || out.days[7]!; // 7 is Sunday too
  out.days.length = 7;
  return out;
}

/** What a field takes, for a refusal whose own words do not say it. */
function accepts(spec: Spec): string {
  return `the ${spec.label} field takes ${spec.hint}, * for every value, lists (a,b), ranges (a-b) and steps (*/n, a-b/n)`;
}

/** Parses an expression; throws CronError saying which field is wrong and why. */
export function parseCronFields(expression: string): CronFields {
  const trimmed = expression.trim();
  if (trimmed === '') throw new CronError('the expression is empty');
  let text = trimmed;
  if (trimmed.startsWith('@')) {
    const expanded = SHORTHANDS.get(trimmed.toLowerCase());
    if (!expanded)
      throw new CronError(`"${trimmed}" is not a known shorthand; use ${[...SHORTHANDS.keys()].join(', ')}`);
    text = expanded;
  }
  const parts = text.split(/\s+/);
  if (parts.length !== 5 && parts.length !== 6)
    throw new CronError(
      `${parts.length} field${parts.length === 1 ? '' : 's'}, but a cron expression has 5: minute hour day-of-month month day-of-week, or 6 with the second first`,
    );
  const [second, minute, hour, dom, month, dow] = (parts.length === 5 ? ['0', ...parts] : parts) as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const field = <T>(spec: Spec, text: string, parse: () => T): T => {
    try {
      return parse();
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      // every refusal ends with what the field takes
      const takes = err.message.includes('; use ') ? '' : `; ${accepts(spec)}`;
      throw new CronError(`${spec.label} field "${text}": ${err.message}${takes}`);
    }
  };
  return {
    second: field(SPECS.second, second, () => parseList(second, SPECS.second)),
    minute: field(SPECS.minute, minute, () => parseList(minute, SPECS.minute)),
    hour: field(SPECS.hour, hour, () => parseList(hour, SPECS.hour)),
    dayOfMonth: field(SPECS.dayOfMonth, dom, () => dayOfMonth(dom)),
    month: field(SPECS.month, month, () => parseList(month, SPECS.month)),
    dayOfWeek: field(SPECS.dayOfWeek, dow, () => dayOfWeek(dow)),
  };
}
