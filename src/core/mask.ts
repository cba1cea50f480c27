/** Masking of secrets for anything an operator or a log reader sees. */

export const MASK = '****';

// scheme://user:password@host — the password runs to the '@' after which only the host follows (no
// further '@' before the path), as WHATWG URL parses `postgresql://app:p@ss@db/app` (password
// "p@ss"); the user may hold an '@' too (Azure's `user@server`). Unsure cases mask too much, not too little.
const URL_PASSWORD_RE =
  /\b([a-z][a-z0-9+.-]*:\/\/[^:/?#\s"']*):([^\s"']*?)@(?=[^@\s"'/?#]*(?:[/?#\s"']|$))/gi;
// key=value pairs in libpq keyword strings and query strings: password=..., sslpassword=...
const KV_PASSWORD_RE = /\b((?:ssl)?password=)([^&\s"']+)/gi;

/** Masks the password of every URL in a string, keeping user, host and database readable. */
export function maskUrlPasswords(text: string): string {
  return text.replace(URL_PASSWORD_RE, `$1:${MASK}@`).replace(KV_PASSWORD_RE, `$1${MASK}`);
}

/** Masks a configuration value for display. URLs keep everything but the password. */
export function maskValue(value: unknown, secret: boolean | 'url'): string {
  if (value === undefined || value === null || value === '') return String(value ?? '');
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (secret === 'url') return maskUrl(text);
  if (secret) return MASK;
  // an age secret key pasted where a public value belongs never goes further
  return text.replace(/AGE-SECRET-KEY-[0-9A-Z-]+/gi, MASK);
}

/**
 * A whole value that is one URL: masked through the URL parser, whatever characters the password
 * holds (quotes, spaces); anything else (a malformed value) through the patterns, and whatever
 * remains after the last ':' before an '@' is masked too.
 */
function maskUrl(text: string): string {
  let password: string | undefined;
  try {
    password = new URL(text.trim()).password || undefined;
  } catch {
    password = undefined;
  }
  if (password) {
    for (const p of new Set([password, safeDecode(password)])) {
      const masked = text.replace(`:${p}@`, `:${MASK}@`);
      if (masked !== text) return masked;
    }
  }
  const masked = maskUrlPasswords(text);
  if (masked !== text) return masked;
  // no pattern matched (a quote or a space in it): from the first ':' after '//' to the last '@'
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):.*@/i, `$1:${MASK}@`);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The password part of a connection URL, if any, so it can be scrubbed wherever it appears. */
export function urlPassword(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return parsed.password ? decodeURIComponent(parsed.password) : undefined;
  } catch {
    return undefined;
  }
}
