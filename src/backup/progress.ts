/**
 * How far long work has come, from bytes done out of a total known (a restore: the object's size)
 * or estimated (a dump: the database's size on disk, which the dump's bytes only approach). The
 * percentage stays below 100 until the work is done, since an estimate can be exceeded; the time
 * left is given only once enough is done for the rate to mean something.
 */

/** No estimate of the time left before this share of the total and this much time. */
const ETA_MIN_FRACTION = 0.01;
const ETA_MIN_MS = 2000;
/** The most a running job may show: 100 % is for done. */
const MAX_RUNNING_PERCENT = 99;

export interface ProgressEstimate {
  /** 0 to 99, one decimal; absent when no total is known. */
  percent?: number;
  /** Seconds left at the rate so far; absent until enough is done, or past the estimated total. */
  etaSeconds?: number;
}

export function estimateProgress(
  done: number,
  total: number | undefined,
  elapsedMs: number,
): ProgressEstimate {
  if (total === undefined || !Number.isFinite(total) || total <= 0) return {};
  const fraction = Math.max(0, done) / total;
  const percent = Math.min(MAX_RUNNING_PERCENT, Math.floor(fraction * 1000) / 10);
  if (fraction < ETA_MIN_FRACTION || elapsedMs < ETA_MIN_MS || fraction >= 1) return { percent };
  return { percent, etaSeconds: Math.max(1, Math.round(((elapsedMs / 1000) * (1 - fraction)) / fraction)) };
}
