/** Field kinds: a zod schema that accepts a string (env, flag) or a typed value (YAML/JSON file). */
import { isIP } from 'node:net';
import { z } from 'zod';
import { CronError, parseCron } from '../cron/cron.js';
import { parseDuration, parseSize } from '../core/units.js';

const INT_RE = /^[+-]?\d+$/;

export function int(min: number, max: number) {
  return z.preprocess(
    (v) => (typeof v === 'string' && INT_RE.test(v.trim()) ? Number(v.trim()) : v),
    z.number().int().min(min).max(max),
  );
}

/** A share: a number above 0 and at most 1, written "0.2" or ".5". */
export function ratio() {
  return z.preprocess(
    (v) => (typeof v === 'string' && /^\d*\.?\d+$/.test(v.trim()) ? Number(v.trim()) : v),
    z.number().gt(0).lte(1),
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

/** An IP address (v4 or v6) or a host name (RFC 1123 labels). */
export function host() {
  const label = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;
  return text().refine(
    (v) =>
      isIP(v) !== 0 ||
      (v.length <= 253 &&
        v
          .replace(/\.$/, '')
          .split('.')
          .every((l) => label.test(l))),
  );
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
      const u = new URL(v);
      // what the connection code decodes must decode (a stray % in a password)
      for (const part of [u.username, u.password, u.pathname, u.hostname]) decodeURIComponent(part);
      return protocols.includes(u.protocol);
    } catch {
      return false;
    }
  });
}

/** Bytes, written as "16MiB", "1GB" or a bare integer of bytes. */
export function size(minBytes: number, maxBytes: number) {
  return z.preprocess((v) => parseSize(v) ?? v, z.number().int().min(minBytes).max(maxBytes));
}

/**
 * A cron expression (5 fields, or 6 with seconds), or "off", checked by the parser the scheduler
 * runs, so what is accepted here is what runs; what is wrong in one is said (see problemDetail).
 */
export function cronOrOff() {
  return text().superRefine((v, ctx) => {
    if (v === 'off') return;
    try {
      parseCron(v);
    } catch (err) {
      if (!(err instanceof CronError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message, params: { detail: err.message } });
    }
  });
}

/** What a kind said is wrong in a value, beyond what the field allows (a cron field, say). */
export function problemDetail(error: z.ZodError): string | undefined {
  for (const issue of error.issues) {
    const detail =
      issue.code === 'custom' ? (issue.params as { detail?: unknown } | undefined)?.detail : undefined;
    if (typeof detail === 'string') return detail;
  }
  return undefined;
}

export function timezone() {
  return text().refine((v) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: v });
      return true;
    } catch {
      return false;
    }
  });
}

/** Any name PostgreSQL allows: 1 to 63 bytes, no NUL (the folder a name's backups go to is encoded). */
function validDatabaseName(v: string): boolean {
  return v.length > 0 && !v.includes('\0') && Buffer.byteLength(v, 'utf8') <= 63;
}

/**
 * A comma-separated list of database names (each trimmed), or in a file a list whose names are
 * taken as written (spaces, commas and all); empty means unset.
 */
export function databaseList() {
  return z.preprocess(
    (v) => {
      if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? x : String(x)));
      if (typeof v !== 'string') return v;
      const items = v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      return items.length ? items : undefined;
    },
    z
      .array(z.string().refine(validDatabaseName))
      .min(1)
      .refine((a) => new Set(a).size === a.length)
      .optional(),
  );
}

/**
 * Per-name durations or "off": "stat_statements=1m, stat_user_tables=5m, locks=off" (a file may also
 * give a mapping). Names outside `names` are refused; "off" is returned as 0.
 */
export function intervalMap<const N extends string>(
  names: readonly [N, ...N[]],
  minMs: number,
  maxMs: number,
  /** Former names, read as the names they map to. */
  aliases: Readonly<Record<string, N>> = {},
) {
  return z.preprocess(
    (v) => {
      if (typeof v === 'string') {
        if (v.trim() === '') return undefined;
        const entries: Array<[string, string]> = [];
        for (const item of v.split(',')) {
          if (!item.trim()) continue;
          const eq = item.indexOf('=');
          if (eq < 0) return v; // malformed: zod reports it
          entries.push([item.slice(0, eq).trim(), item.slice(eq + 1).trim()]);
        }
        v = Object.fromEntries(entries);
      }
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        return Object.fromEntries(
          Object.entries(v).map(([k, d]) => [
            Object.hasOwn(aliases, k) ? aliases[k] : k,
            typeof d === 'string' && d.trim().toLowerCase() === 'off' ? 0 : (parseDuration(d) ?? d),
          ]),
        );
      }
      return v;
    },
    z
      .partialRecord(z.enum(names), z.union([z.literal(0), z.number().int().min(minMs).max(maxMs)]))
      .optional(),
  );
}

/** An age recipient as age-keygen prints it (X25519, or the post-quantum and tag kinds). */
export const AGE_RECIPIENT = /^age1(?:pq1|tag1|tagpq1)?[02-9ac-hj-np-z]{58,}$/;

/** Splits a list of age recipients (commas, spaces, newlines; `#` starts a comment). */
export function splitAgeRecipients(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join(' ')
    .split(/[\s,]+/)
    .filter(Boolean);
}

/** One or more age recipients; never quotes a token (a secret key pasted here must not be echoed). */
export function ageRecipients() {
  return z.preprocess(
    (v) => (typeof v === 'string' ? (v.trim() === '' ? undefined : v) : v),
    z
      .string()
      .transform(splitAgeRecipients)
      .superRefine((list, ctx) => {
        const bad = list.findIndex((r) => !AGE_RECIPIENT.test(r));
        if (list.length === 0 || bad >= 0) {
          const detail =
            list.length === 0
              ? 'no recipient given'
              : /^AGE-SECRET-KEY-/i.test(list[bad]!)
                ? `item ${bad + 1} is a secret key (AGE-SECRET-KEY-...): give its public key (age-keygen -y) and keep the secret out of this setting`
                : `item ${bad + 1} is not an age public key (age1...)`;
          ctx.addIssue({ code: 'custom', message: detail, params: { detail } });
        }
      })
      .optional(),
  );
}
