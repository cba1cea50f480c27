/** Strict parsers for the duration and size notations accepted in configuration. */

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;

/**
 * Parses "250ms", "30s", "5m", "2h", "1d", or a bare integer, which means milliseconds
 * (the seed guide's DB_POOL_* values are bare milliseconds). Returns undefined when malformed.
 */
export function parseDuration(input: unknown): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? Math.round(input) : undefined;
  if (typeof input !== 'string') return undefined;
  const m = DURATION_RE.exec(input.trim());
  if (!m) return undefined;
  const value = Number(m[1]);
  const unit = m[2] ?? 'ms';
  if (unit === 'ms' && !Number.isInteger(value)) return undefined;
  return Math.round(value * (DURATION_UNITS[unit] ?? 1));
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};
const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?$/i;

/** Parses "512MiB", "5GB", "1024" (bytes). Returns undefined when malformed. */
export function parseSize(input: unknown): number | undefined {
  if (typeof input === 'number') return Number.isInteger(input) && input >= 0 ? input : undefined;
  if (typeof input !== 'string') return undefined;
  const m = SIZE_RE.exec(input.trim());
  if (!m) return undefined;
  const bytes = Number(m[1]) * (SIZE_UNITS[(m[2] ?? 'b').toLowerCase()] ?? 1);
  return Number.isFinite(bytes) ? Math.round(bytes) : undefined;
}

/** 1536 -> "1.5 KiB", for people (logs, reports). */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
