/**
 * The globals read back from the store are hostile: what is run is never their text but a script
 * written here from statements parsed out of it, each of a shape pg_dumpall writes for roles,
 * memberships, role settings and tablespaces. Anything else (DROP ROLE, COPY ... PROGRAM, a function,
 * a psql meta-command other than pg_dumpall's own \restrict / \unrestrict, a dollar quote) refuses the
 * whole object before anything runs. Identifiers and strings are quoted again by this module.
 *
 * Roles and tablespaces the target already has are left as they are: never dropped, never altered
 * (a stored `ALTER ROLE existing WITH SUPERUSER PASSWORD ...` would hand the server to whoever wrote
 * the store), and memberships and settings are given only to roles this restore creates.
 */
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

type Token =
  | { t: 'word'; v: string; upper: string }
  | { t: 'ident'; v: string } // quoted identifier
  | { t: 'string'; v: string }
  | { t: 'number'; v: string }
  | { t: 'punct'; v: string };

export type GlobalsStatement =
  | { kind: 'create-role'; role: string; sql: string }
  | { kind: 'role'; role: string; sql: string } // ALTER ROLE ... WITH, COMMENT ON ROLE
  | { kind: 'role-setting'; role: string; sql: string }
  | { kind: 'membership'; role: string; member: string; sql: string }
  | { kind: 'create-tablespace'; tablespace: string; sql: string }
  | { kind: 'tablespace'; tablespace: string; sql: string };

/** Settings a role's sessions load code from: never taken from the store. */
const REFUSED_SETTINGS = new Set([
  'session_preload_libraries',
  'local_preload_libraries',
  'dynamic_library_path',
]);
const ROLE_FLAGS = new Set(
  ['SUPERUSER', 'INHERIT', 'CREATEROLE', 'CREATEDB', 'LOGIN', 'REPLICATION', 'BYPASSRLS'].flatMap((f) => [
    f,
    `NO${f}`,
  ]),
);
const SESSION_SETS: Record<string, RegExp> = {
  default_transaction_read_only: /^off$/,
  client_encoding: /^UTF8$/,
  standard_conforming_strings: /^on$/,
};

export function refuse(why: string): OperatorError {
  return new OperatorError(`the stored globals are refused, nothing of them ran: ${why}`, {
    exitCode: EXIT.DATAERR,
    hint: 'pg_dumpall --globals-only writes only roles, memberships, role settings and tablespaces: someone who can write to the store altered this object. Restore other globals (--globals-key), find out who can write there, and set BACKUP_SIGNING_KEY_FILE',
  });
}

export const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;
export const quoteLiteral = (s: string) => `'${s.replace(/'/g, "''")}'`;

function tokenize(text: string): Array<Token[]> {
  const statements: Array<Token[]> = [];
  let cur: Token[] = [];
  let i = 0;
  let lineStart = true;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === '\n') {
      lineStart = true;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    const atLineStart = lineStart;
    lineStart = false;
    if (c === '-' && text[i + 1] === '-') {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? n : nl;
      continue;
    }
    if (c === '\\') {
      const nl = text.indexOf('\n', i);
      const line = text.slice(i, nl < 0 ? n : nl).replace(/\r$/, '');
      if (!atLineStart || cur.length || !/^\\(?:un)?restrict [A-Za-z0-9]+$/.test(line))
        throw refuse(`a psql meta-command (${JSON.stringify(line.slice(0, 60))})`);
      i = nl < 0 ? n : nl;
      continue;
    }
    if (c === "'") {
      let v = '';
      let j = i + 1;
      for (;;) {
        const q = text.indexOf("'", j);
        if (q < 0) throw refuse('a string that never ends');
        v += text.slice(j, q);
        if (text[q + 1] === "'") {
          v += "'";
          j = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      cur.push({ t: 'string', v });
      continue;
    }
    if (c === '"') {
      let v = '';
      let j = i + 1;
      for (;;) {
        const q = text.indexOf('"', j);
        if (q < 0) throw refuse('a quoted name that never ends');
        v += text.slice(j, q);
        if (text[q + 1] === '"') {
          v += '"';
          j = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      if (v === '' || v.includes('\0')) throw refuse('an empty or NUL-holding name');
      cur.push({ t: 'ident', v });
      continue;
    }
    const word = /^[A-Za-z_][A-Za-z0-9_$]*/.exec(text.slice(i, i + 200));
    if (word) {
      // a string right after a word is E'...', U&'...' or the like: pg_dumpall writes none
      if (text[i + word[0].length] === "'") throw refuse(`a prefixed string (${word[0]}'...')`);
      cur.push({ t: 'word', v: word[0].toLowerCase(), upper: word[0].toUpperCase() });
      i += word[0].length;
      continue;
    }
    const num = /^-?\d+(?:\.\d+)?/.exec(text.slice(i, i + 100));
    if (num) {
      cur.push({ t: 'number', v: num[0] });
      i += num[0].length;
      continue;
    }
    if (c === ';') {
      if (cur.length) statements.push(cur);
      cur = [];
      i++;
      continue;
    }
    if ('(),=.'.includes(c)) {
      cur.push({ t: 'punct', v: c });
      i++;
      continue;
    }
    throw refuse(`an unexpected character ${JSON.stringify(c)}`);
  }
  if (cur.length) throw refuse('a statement without its closing semicolon');
  return statements;
}

/** A cursor over one statement's tokens. */
class Reader {
  #i = 0;
  constructor(
    readonly tokens: Token[],
    readonly text: string,
  ) {}
  get done(): boolean {
    return this.#i >= this.tokens.length;
  }
  peekWord(): string | undefined {
    const t = this.tokens[this.#i];
    return t?.t === 'word' ? t.upper : undefined;
  }
  keyword(...words: string[]): void {
    for (const w of words) {
      if (this.peekWord() !== w) throw this.fail();
      this.#i++;
    }
  }
  maybe(word: string): boolean {
    if (this.peekWord() !== word) return false;
    this.#i++;
    return true;
  }
  name(): string {
    const t = this.tokens[this.#i++];
    if (t?.t === 'ident' || t?.t === 'word') return t.v;
    throw this.fail();
  }
  string(): string {
    const t = this.tokens[this.#i++];
    if (t?.t === 'string') return t.v;
    throw this.fail();
  }
  number(): string {
    const t = this.tokens[this.#i++];
    if (t?.t === 'number') return t.v;
    throw this.fail();
  }
  punct(p: string): boolean {
    const t = this.tokens[this.#i];
    if (t?.t !== 'punct' || t.v !== p) return false;
    this.#i++;
    return true;
  }
  end(): void {
    if (!this.done) throw this.fail();
  }
  fail(): OperatorError {
    return refuse(`a statement pg_dumpall does not write: ${JSON.stringify(this.text.slice(0, 120))}`);
  }
}

function describe(tokens: Token[]): string {
  return tokens
    .map((t) => (t.t === 'string' ? quoteLiteral(t.v) : t.t === 'ident' ? quoteIdent(t.v) : t.v))
    .join(' ');
}

function roleName(r: Reader): string {
  const name = r.name();
  if (/^pg_/i.test(name)) throw refuse(`a role in the reserved pg_ namespace (${JSON.stringify(name)})`);
  return name;
}

/** Parses the text of pg_dumpall --globals-only into the statements it may hold; refuses anything else. */
export function parseGlobals(text: string): GlobalsStatement[] {
  if (text.includes('\0')) throw refuse('a NUL byte');
  const out: GlobalsStatement[] = [];
  for (const tokens of tokenize(text)) {
    const r = new Reader(tokens, describe(tokens));
    const first = r.peekWord();
    if (first === 'SET') {
      r.keyword('SET');
      const name = r.name();
      if (!r.punct('=')) r.keyword('TO');
      const t = tokens[tokens.length - 1]!;
      const value = t.t === 'string' || t.t === 'word' ? t.v : '';
      if (tokens.length !== 4 || !SESSION_SETS[name]?.test(value)) throw r.fail();
      continue; // the script written here sets its own session
    }
    if (first === 'CREATE' && tokens[1]?.t === 'word' && tokens[1].upper === 'ROLE') {
      r.keyword('CREATE', 'ROLE');
      const role = roleName(r);
      r.end();
      out.push({ kind: 'create-role', role, sql: `CREATE ROLE ${quoteIdent(role)}` });
      continue;
    }
    if (first === 'ALTER' && tokens[1]?.t === 'word' && tokens[1].upper === 'ROLE') {
      r.keyword('ALTER', 'ROLE');
      const role = roleName(r);
      if (r.maybe('WITH')) {
        const parts: string[] = [];
        while (!r.done) {
          const w = r.peekWord();
          if (w && ROLE_FLAGS.has(w)) {
            r.keyword(w);
            parts.push(w);
          } else if (w === 'CONNECTION') {
            r.keyword('CONNECTION', 'LIMIT');
            parts.push(`CONNECTION LIMIT ${Number.parseInt(r.number(), 10)}`);
          } else if (w === 'PASSWORD') {
            r.keyword('PASSWORD');
            parts.push(`PASSWORD ${quoteLiteral(r.string())}`);
          } else if (w === 'VALID') {
            r.keyword('VALID', 'UNTIL');
            parts.push(`VALID UNTIL ${quoteLiteral(r.string())}`);
          } else throw r.fail();
        }
        out.push({ kind: 'role', role, sql: `ALTER ROLE ${quoteIdent(role)} WITH ${parts.join(' ')}` });
        continue;
      }
      let inDb = '';
      if (r.maybe('IN')) {
        r.keyword('DATABASE');
        inDb = ` IN DATABASE ${quoteIdent(r.name())}`;
      }
      r.keyword('SET');
      let param = r.name();
      while (r.punct('.')) param += `.${r.name()}`;
      if (REFUSED_SETTINGS.has(param.toLowerCase()))
        throw refuse(`a role setting that loads code (${param} of role ${JSON.stringify(role)})`);
      if (!r.punct('=')) r.keyword('TO');
      const values: string[] = [];
      // pg_dumpall quotes every value
      do values.push(quoteLiteral(r.string()));
      while (r.punct(','));
      r.end();
      const setting = param
        .split('.')
        .map((p) => quoteIdent(p))
        .join('.');
      out.push({
        kind: 'role-setting',
        role,
        sql: `ALTER ROLE ${quoteIdent(role)}${inDb} SET ${setting} TO ${values.join(', ')}`,
      });
      continue;
    }
    if (first === 'COMMENT') {
      r.keyword('COMMENT', 'ON');
      const what = r.maybe('ROLE') ? 'ROLE' : (r.keyword('TABLESPACE'), 'TABLESPACE');
      const name = what === 'ROLE' ? roleName(r) : r.name();
      r.keyword('IS');
      const comment = r.string();
      r.end();
      const sql = `COMMENT ON ${what} ${quoteIdent(name)} IS ${quoteLiteral(comment)}`;
      out.push(
        what === 'ROLE' ? { kind: 'role', role: name, sql } : { kind: 'tablespace', tablespace: name, sql },
      );
      continue;
    }
    if (first === 'GRANT' || first === 'REVOKE') {
      out.push(grant(r, tokens, first));
      continue;
    }
    if (first === 'CREATE') {
      r.keyword('CREATE', 'TABLESPACE');
      const ts = r.name();
      r.keyword('OWNER');
      const owner = r.name();
      r.keyword('LOCATION');
      const location = r.string();
      r.end();
      if (!location.startsWith('/')) throw refuse(`a tablespace location that is not an absolute path`);
      out.push({
        kind: 'create-tablespace',
        tablespace: ts,
        sql: `CREATE TABLESPACE ${quoteIdent(ts)} OWNER ${quoteIdent(owner)} LOCATION ${quoteLiteral(location)}`,
      });
      continue;
    }
    if (first === 'ALTER') {
      r.keyword('ALTER', 'TABLESPACE');
      const ts = r.name();
      r.keyword('SET');
      if (!r.punct('(')) throw r.fail();
      const opts: string[] = [];
      do {
        const name = r.name();
        if (
          !/^(seq_page_cost|random_page_cost|effective_io_concurrency|maintenance_io_concurrency)$/.test(name)
        )
          throw r.fail();
        if (!r.punct('=')) throw r.fail();
        opts.push(`${name} = ${r.number()}`);
      } while (r.punct(','));
      if (!r.punct(')')) throw r.fail();
      r.end();
      out.push({
        kind: 'tablespace',
        tablespace: ts,
        sql: `ALTER TABLESPACE ${quoteIdent(ts)} SET (${opts.join(', ')})`,
      });
      continue;
    }
    throw r.fail();
  }
  return out;
}

/** GRANT role TO role [WITH ...] [GRANTED BY role]; GRANT/REVOKE ... ON TABLESPACE. */
function grant(r: Reader, tokens: Token[], verb: 'GRANT' | 'REVOKE'): GlobalsStatement {
  const onAt = tokens.findIndex((t) => t.t === 'word' && t.upper === 'ON');
  r.keyword(verb);
  if (onAt >= 0) {
    const privs: string[] = [];
    do {
      const w = r.peekWord();
      if (w !== 'CREATE' && w !== 'ALL') throw r.fail();
      r.keyword(w);
      if (w === 'ALL') r.maybe('PRIVILEGES');
      privs.push(w);
    } while (r.punct(','));
    r.keyword('ON', 'TABLESPACE');
    const ts = r.name();
    r.keyword(verb === 'GRANT' ? 'TO' : 'FROM');
    const grantee = r.maybe('PUBLIC') ? 'PUBLIC' : quoteIdent(r.name());
    const withGrant =
      verb === 'GRANT' && r.maybe('WITH') ? (r.keyword('GRANT', 'OPTION'), ' WITH GRANT OPTION') : '';
    if (r.maybe('GRANTED')) {
      r.keyword('BY');
      r.name(); // the grantor is the restoring role
    }
    r.end();
    return {
      kind: 'tablespace',
      tablespace: ts,
      sql: `${verb} ${privs.join(', ')} ON TABLESPACE ${quoteIdent(ts)} ${verb === 'GRANT' ? 'TO' : 'FROM'} ${grantee}${withGrant}`,
    };
  }
  if (verb === 'REVOKE') throw r.fail();
  const role = r.name();
  r.keyword('TO');
  const member = roleName(r);
  const opts: string[] = [];
  if (r.maybe('WITH')) {
    do {
      const w = r.peekWord();
      if (w !== 'ADMIN' && w !== 'INHERIT' && w !== 'SET') throw r.fail();
      r.keyword(w);
      const v = r.peekWord();
      if (v !== 'OPTION' && v !== 'TRUE' && v !== 'FALSE') throw r.fail();
      r.keyword(v);
      opts.push(`${w} ${v}`);
    } while (r.punct(','));
  }
  if (r.maybe('GRANTED')) {
    r.keyword('BY');
    r.name(); // left out: the grantor may not exist on the target; the restoring role grants
  }
  r.end();
  return {
    kind: 'membership',
    role,
    member,
    sql: `GRANT ${quoteIdent(role)} TO ${quoteIdent(member)}${opts.length ? ` WITH ${opts.join(', ')}` : ''}`,
  };
}

export interface GlobalsPlan {
  /** The script to run: roles in one transaction, then each tablespace (which cannot run in one). */
  script: string;
  created: string[];
  existing: string[];
  tablespaces: string[];
  /** Statements left out because they concern a role or tablespace the target already has. */
  skipped: number;
}

/** The script for a target that has `roles` and `tablespaces` already. */
export function planGlobals(
  statements: GlobalsStatement[],
  roles: ReadonlySet<string>,
  tablespaces: ReadonlySet<string>,
): GlobalsPlan {
  const creating = new Set(
    statements
      .filter((s) => s.kind === 'create-role' && !roles.has(s.role))
      .map((s) => (s as { role: string }).role),
  );
  const newTs = new Set(
    statements
      .filter((s) => s.kind === 'create-tablespace' && !tablespaces.has(s.tablespace))
      .map((s) => (s as { tablespace: string }).tablespace),
  );
  const tx: string[] = [];
  const ts: string[] = [];
  let skipped = 0;
  for (const s of statements) {
    const keep =
      s.kind === 'create-tablespace' || s.kind === 'tablespace'
        ? newTs.has(s.tablespace)
        : creating.has(s.kind === 'membership' ? s.member : s.role);
    if (!keep) {
      skipped++;
      continue;
    }
    (s.kind === 'create-tablespace' || s.kind === 'tablespace' ? ts : tx).push(`${s.sql};`);
  }
  // roles first, memberships after every role exists
  const order = (l: string) => (l.startsWith('CREATE ROLE') ? 0 : l.startsWith('GRANT') ? 2 : 1);
  tx.sort((a, b) => order(a) - order(b));
  const script = [
    "SET client_encoding = 'UTF8';",
    'SET standard_conforming_strings = on;',
    ...(tx.length ? ['BEGIN;', ...tx, 'COMMIT;'] : []),
    ...ts,
    '',
  ].join('\n');
  return {
    script,
    created: [...creating],
    existing: [
      ...new Set(
        statements
          .filter((s) => s.kind === 'create-role' && roles.has(s.role))
          .map((s) => (s as { role: string }).role),
      ),
    ],
    tablespaces: [...newTs],
    skipped,
  };
}
