/**
 * Wall-clock time in an IANA zone, from Intl (the ICU zone data Node ships). A wall-clock time is
 * held as "local ms": the milliseconds a UTC clock would show at that reading, so calendar fields
 * come from the UTC getters and no host time zone is involved.
 *
 * Mapping a wall-clock reading to an instant: the first instant at which the zone's clock reads it
 * or later. For an ordinary reading that is the instant itself; for a reading the clock shows twice
 * (the hour repeated when it goes back) it is the first time; for a reading the clock skips (the
 * gap when it goes forward) it is the instant of the jump. The mapping never decreases, so slots
 * taken in wall-clock order come out in instant order.
 */

const SECOND = 1000;
const DAY = 86_400_000;

/** Milliseconds of a UTC calendar reading, valid for every year (Date.UTC reads 0-99 as 19xx). */
export function localMs(y: number, m: number, d: number, h = 0, mi = 0, s = 0): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const days = era * 146_097 + yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy - 719_468;
  return days * DAY + h * 3_600_000 + mi * 60_000 + s * SECOND;
}

export function daysInMonth(y: number, m: number): number {
  if (m === 2) return y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28;
  return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
}

/** 0 = Sunday. */
export function weekday(y: number, m: number, d: number): number {
  return (((Math.floor(localMs(y, m, d) / DAY) + 4) % 7) + 7) % 7;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    // throws RangeError for a zone Intl does not know; the configuration checks it first
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(zone, f);
  }
  return f;
}

/** The zone's offset from UTC at `instant` (local = instant + offset), in ms, to the second. */
export function offsetAt(zone: string, instant: number): number {
  const t = Math.floor(instant / SECOND) * SECOND;
  let y = 0,
    mo = 0,
    d = 0,
    h = 0,
    mi = 0,
    s = 0;
  for (const p of formatter(zone).formatToParts(t)) {
    if (p.type === 'year') y = Number(p.value);
    else if (p.type === 'month') mo = Number(p.value);
    else if (p.type === 'day') d = Number(p.value);
    else if (p.type === 'hour') h = Number(p.value) % 24;
    else if (p.type === 'minute') mi = Number(p.value);
    else if (p.type === 'second') s = Number(p.value);
  }
  return localMs(y, mo, d, h, mi, s) - t;
}

/** The wall-clock reading at `instant`, in local ms. */
function wallClock(zone: string, instant: number): number {
  return instant + offsetAt(zone, instant);
}

/**
 * The highest wall-clock reading at or before `instant`. It is the reading at `instant`, except in
 * the hour after the clock went back, when the clock has already shown the readings it shows again.
 * Assumes at most one change of offset in the day before `instant` (tz data has none closer).
 */
export function highestWallClock(zone: string, instant: number): number {
  const now = offsetAt(zone, instant);
  const dayBefore = offsetAt(zone, instant - DAY);
  if (dayBefore <= now) return instant + now;
  const change = firstInstantWith(instant - DAY, instant, (t) => offsetAt(zone, t) !== dayBefore);
  return Math.max(instant + now, change - 1 + dayBefore);
}

/** The first instant at which the zone's wall clock reads `local` or later (see the module comment). */
export function firstInstantAtOrAfter(zone: string, local: number): number {
  const before = offsetAt(zone, local - DAY);
  const after = offsetAt(zone, local + DAY);
  let first: number | undefined;
  for (const o of before === after ? [before] : [before, after]) {
    const t = local - o;
    if (offsetAt(zone, t) === o && (first === undefined || t < first)) first = t;
  }
  if (first !== undefined) return first;
  // In a gap: the clock jumped from before `local` to after it between these two instants.
  const lo = local - Math.max(before, after);
  const hi = local - Math.min(before, after);
  return firstInstantWith(lo, hi, (t) => wallClock(zone, t) >= local);
}

/** Bisects whole seconds in (lo, hi] for the first instant where `reached` holds (false at lo). */
function firstInstantWith(lo: number, hi: number, reached: (t: number) => boolean): number {
  let a = Math.floor(lo / SECOND);
  let b = Math.ceil(hi / SECOND);
  if (!reached(b * SECOND)) return hi;
  while (b - a > 1) {
    const mid = Math.floor((a + b) / 2);
    if (reached(mid * SECOND)) b = mid;
    else a = mid;
  }
  return b * SECOND;
}
