/** Field kinds: a zod schema that accepts a string (env, flag) or a typed value (YAML/JSON file). */
import { z } from 'zod';
import { parseDuration } from './units.js';

const INT_RE = /^[+-]?\d+$/;

export function int(min: number, max: number) {
  return z.preprocess(
    (v) => (typeof v === 'string' && INT_RE.test(v.trim()) ? Number(v.trim()) : v),
    z.number().int().min(min).max(max),
  );
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

export function bool() {
  return z.preprocess((v) => {
    if (typeof v !== 'string') return v;
    const s = v.trim().toLowerCase();
    if (TRUE.has(s)) return true;
    if (FALSE.has(s)) return false;
    return v;
  }, z.boolean());
}

export function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.preprocess((v) => (typeof v === 'string' ? v.trim() : v), z.enum(values));
}

/** Milliseconds, written as "30s", "5m" or a bare integer of milliseconds. */
export function duration(minMs: number, maxMs: number) {
  return z.preprocess((v) => parseDuration(v) ?? v, z.number().int().min(minMs).max(maxMs));
}

export function text() {
  return z.preprocess((v) => (typeof v === 'string' ? v.trim() : v), z.string().min(1));
}

export function optionalText() {
  return z.preprocess(
    (v) => (typeof v === 'string' ? (v.trim() === '' ? undefined : v.trim()) : v),
    z.string().min(1).optional(),
  );
}

export function url(protocols: readonly string[]) {
  return text().refine((v) => {
    try {
      return protocols.includes(new URL(v).protocol);
    } catch {
      return false;
    }
  });
}
