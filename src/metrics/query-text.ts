/**
 * SQL text with its literals masked, for metrics and logs. pg_stat_statements replaces the constants
 * of SELECT/INSERT/UPDATE/DELETE with $n itself, but keeps utility statements as they were written
 * (ALTER ROLE ... PASSWORD '...', CREATE USER MAPPING ... OPTIONS (password '...')), and
 * pg_stat_activity keeps every statement as written. So every string constant ('...', E'...',
 * U&'...', B'...', X'...', N'...', $tag$...$tag$) and every number becomes `?`, and comments go.
 *
 * The text is treated as hostile: where it ends inside a literal (cut short by a length limit) the
 * rest is masked, and where a literal's end is ambiguous the rest is masked too. That is a plain
 * '...' holding a backslash: with standard_conforming_strings off (a session may set it) \' does
 * not end the string, with it on it does, and either reading could put a secret outside a literal.
 */

export const MASK = '?';

const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_REST = /[A-Za-z0-9_$\u0080-\uffff]/;
const NUMBER =
  /0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?/y;
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;

/** `sql` with every literal as `?` and no comments; at most `maxChars` characters when given. */
export function maskQueryText(sql: string, maxChars?: number): string {
  const masked = maskLiterals(sql);
  if (maxChars === undefined) return masked;
  const chars = Array.from(masked); // code points: a cut never splits a surrogate pair
  return chars.length > maxChars ? chars.slice(0, maxChars).join('') : masked;
}

function maskLiterals(sql: string): string {
  let out = '';
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === '-' && next === '-') {
      const eol = sql.indexOf('\n', i);
      out += ' ';
      i = eol < 0 ? n : eol;
    } else if (c === '/' && next === '*') {
      out += ' ';
      i = blockCommentEnd(sql, i);
    } else if (c === "'") {
      const end = plainStringEnd(sql, i);
      out += MASK;
      if (end < 0) return out; // cut short, or ambiguous: the rest is masked
      i = end;
    } else if (c === '"') {
      const end = quotedEnd(sql, i, '"', -1);
      if (end < 0) return `${out}"${MASK}`; // cut short: nothing after it can be read for sure
      out += sql.slice(i, end); // an identifier: no literal inside
      i = end;
    } else if (c === '$') {
      DOLLAR_TAG.lastIndex = i;
      const tag = DOLLAR_TAG.exec(sql)?.[0];
      if (/[0-9]/.test(next ?? '')) {
        let j = i + 1;
        while (j < n && /[0-9]/.test(sql[j]!)) j++;
        out += sql.slice(i, j); // a parameter, $1: what pg_stat_statements writes for constants
        i = j;
      } else if (tag) {
        const close = sql.indexOf(tag, i + tag.length);
        out += MASK;
        if (close < 0) return out;
        i = close + tag.length;
      } else if (/^\$[A-Za-z0-9_\u0080-\uffff]*$/.test(sql.slice(i))) {
        return out + MASK; // the text ends inside what may be a dollar quote's opening tag
      } else {
        out += c;
        i++;
      }
    } else if (IDENT_START.test(c)) {
      let j = i + 1;
      while (j < n && IDENT_REST.test(sql[j]!)) j++;
      const word = sql.slice(i, j);
      const prefixed = prefixedString(sql, word, j);
      if (prefixed === undefined) {
        out += word;
        i = j;
      } else {
        out += MASK;
        if (prefixed < 0) return out;
        i = prefixed;
      }
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(next ?? ''))) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(sql)!;
      out += MASK;
      i += m[0].length;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/**
 * A string constant with a prefix word right before its quote (E'', U&'', B'', X'', N''): the index
 * after it, -1 when it runs to the end or is ambiguous, undefined when `word` starts none.
 */
function prefixedString(sql: string, word: string, at: number): number | undefined {
  const w = word.toLowerCase();
  if (w === 'u' && sql[at] === '&' && sql[at + 1] === "'") return quotedEnd(sql, at + 1, "'", -1);
  if (sql[at] !== "'") return undefined;
  if (w === 'e') return escapeStringEnd(sql, at);
  if (w === 'b' || w === 'x') return quotedEnd(sql, at, "'", -1);
  if (w === 'n') return plainStringEnd(sql, at);
  return undefined;
}

/** After '...' (doubled '' inside), or -1: cut short, or a backslash makes its end ambiguous. */
function plainStringEnd(sql: string, at: number): number {
  const end = quotedEnd(sql, at, "'", -1);
  if (end < 0 || sql.slice(at, end).includes('\\')) return -1;
  return end;
}

/** After E'...' (backslash escapes, and doubled ''), or -1 when the text ends inside it. */
function escapeStringEnd(sql: string, at: number): number {
  for (let j = at + 1; j < sql.length; j++) {
    if (sql[j] === '\\') j++;
    else if (sql[j] === "'") {
      if (sql[j + 1] !== "'") return j + 1;
      j++;
    }
  }
  return -1;
}

/** After a quoted run starting at `at` (its quote doubled inside), or `open` when it never closes. */
function quotedEnd(sql: string, at: number, quote: string, open: number): number {
  for (let j = at + 1; j < sql.length; j++) {
    if (sql[j] !== quote) continue;
    if (sql[j + 1] !== quote) return j + 1;
    j++;
  }
  return open;
}

/** After a block comment (they nest in PostgreSQL), or the end of the text. */
function blockCommentEnd(sql: string, at: number): number {
  let depth = 0;
  for (let j = at; j < sql.length - 1; j++) {
    if (sql[j] === '/' && sql[j + 1] === '*') {
      depth++;
      j++;
    } else if (sql[j] === '*' && sql[j + 1] === '/') {
      depth--;
      j++;
      if (depth === 0) return j + 1;
    }
  }
  return sql.length;
}
