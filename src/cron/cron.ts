/**
 * Cron schedules, evaluated in the wall-clock time of a zone (SCHEDULE_TZ), as Vixie cron and
 * cronie do across daylight-saving changes:
 * - a slot whose wall-clock time does not exist (the hour skipped when the clock goes forward) runs
 *   at the first instant after the jump, once, however many slots fall in the gap;
 * - a slot whose wall-clock time happens twice (the hour repeated when the clock goes back) runs at
 *   its first occurrence only.
 * A slot is an instant that depends only on the expression, the zone and the zone data, so replicas
 * agree on it (it is the tick jobs record and compare), and the slots of a schedule strictly increase.
 * The text it accepts is described in cron-fields.ts.
 */
import { CronError, parseCronFields, type CronFields } from './cron-fields.js';
import { daysInMonth, firstInstantAtOrAfter, highestWallClock, localMs, weekday } from './wall-clock.js';

export { CronError };

const SECOND = 1000;
const DAY = 86_400_000;
/** The Gregorian calendar (weekdays included) repeats every 400 years: a date that exists is within. */
const SEARCH_MS = localMs(2400, 1, 1) - localMs(2000, 1, 1) + DAY;
/** Beyond this a Date cannot hold the instant (year 275760); no slot is found there. */
const LAST_INSTANT = 8.64e15 - 2 * DAY;

/** For each value, the first allowed value at or after it, or -1 (one entry past the end, too). */
function firstAllowed(allowed: boolean[]): Int8Array {
  const table = new Int8Array(allowed.length + 1).fill(-1);
  for (let v = allowed.length - 1; v >= 0; v--) table[v] = allowed[v] ? v : table[v + 1]!;
  return table;
}

/** Day `target`, moved to the nearest Monday-Friday of the same month (node-cron's `W`), or -1. */
function nearestWeekday(y: number, m: number, target: number, last: number): number {
  if (target > last) return -1;
  const wd = weekday(y, m, target);
  if (wd === 6) return target === 1 ? 3 : target - 1;
  if (wd === 0) return target === last ? target - 2 : target + 1;
  return target;
}

export class Cron {
  readonly expression: string;
  readonly #f: CronFields;
  readonly #second: Int8Array;
  readonly #minute: Int8Array;
  readonly #hour: Int8Array;

  /** Throws CronError saying what is wrong in the expression. */
  constructor(expression: string) {
    this.expression = expression.trim();
    this.#f = parseCronFields(expression);
    this.#second = firstAllowed(this.#f.second);
    this.#minute = firstAllowed(this.#f.minute);
    this.#hour = firstAllowed(this.#f.hour);
    if (this.#nextLocal(localMs(2000, 1, 1)) === undefined)
      throw new CronError(
        'it never runs: no date matches its day-of-month, month and day-of-week fields together; a day must match both day fields',
      );
  }

  /** The first slot strictly after the instant `after` (ms), in `zone`'s wall-clock time. */
  next(after: number, zone: string): number | undefined {
    if (!(Math.abs(after) <= LAST_INSTANT)) return undefined;
    // Wall-clock times up to the highest the clock has shown are handled: in the hour repeated
    // after the clock went back, that is the end of its first pass, so slots run only once.
    let from = Math.floor(highestWallClock(zone, after) / SECOND) * SECOND + SECOND;
    for (;;) {
      const local = this.#nextLocal(from);
      if (local === undefined || local > LAST_INSTANT) return undefined;
      const slot = firstInstantAtOrAfter(zone, local);
      if (slot > after) return slot;
      from = local + SECOND; // only with zone data beyond highestWallClock's assumption
    }
  }

  /** The first matching wall-clock time at or after `from` (local ms). */
  #nextLocal(from: number): number | undefined {
    const until = from + SEARCH_MS;
    const start = new Date(from);
    let y = start.getUTCFullYear();
    let mo = start.getUTCMonth() + 1;
    let d = start.getUTCDate();
    let h = start.getUTCHours();
    let mi = start.getUTCMinutes();
    let s = start.getUTCSeconds();
    const f = this.#f;
    const nextDay = () => {
      h = mi = s = 0;
      if (++d > daysInMonth(y, mo)) {
        d = 1;
        if (++mo > 12) [mo, y] = [1, y + 1];
      }
    };
    for (;;) {
      if (localMs(y, mo, d) > until) return undefined;
      if (!f.month[mo]) {
        [d, h, mi, s] = [1, 0, 0, 0];
        do if (++mo > 12) [mo, y] = [1, y + 1];
        while (!f.month[mo]);
        continue;
      }
      if (!this.#dayMatches(y, mo, d)) {
        nextDay();
        continue;
      }
      const hour = this.#hour[h]!;
      if (hour < 0) {
        nextDay();
        continue;
      }
      if (hour !== h) [h, mi, s] = [hour, 0, 0];
      const minute = this.#minute[mi]!;
      if (minute < 0) {
        [h, mi, s] = [h + 1, 0, 0];
        continue;
      }
      if (minute !== mi) [mi, s] = [minute, 0];
      const second = this.#second[s]!;
      if (second < 0) {
        [mi, s] = [mi + 1, 0];
        continue;
      }
      return localMs(y, mo, d, h, mi, second);
    }
  }

  #dayMatches(y: number, m: number, d: number): boolean {
    const dom = this.#f.dayOfMonth;
    const last = daysInMonth(y, m);
    const domOk =
      dom.days[d] ||
      (dom.last && d === last) ||
      dom.beforeLast.some((n) => d === last - n) ||
      dom.nearestWeekday.some((n) => nearestWeekday(y, m, n, last) === d) ||
      (dom.lastWeekday && nearestWeekday(y, m, last, last) === d);
    if (!domOk) return false;
    const dow = this.#f.dayOfWeek;
    const wd = weekday(y, m, d);
    return (
      dow.days[wd] === true ||
      dow.nth.some((x) => x.day === wd && Math.ceil(d / 7) === x.n) ||
      dow.last.some((day) => day === wd && d + 7 > last)
    );
  }
}

/** Parses a cron expression; throws CronError saying what is wrong in it. */
export function parseCron(expression: string): Cron {
  return new Cron(expression);
}
