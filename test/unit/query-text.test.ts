// Literal masking of SQL text: every form of string constant, numbers, comments, text cut short,
// and the backslash ambiguity of standard_conforming_strings. (The real server's texts are checked
// in test/integration/collectors.test.ts.)
import { describe, expect, it } from 'vitest';
import { maskQueryText } from '../../src/metrics/query-text.js';

const SECRET = 'S3cr3t-pw';

describe('maskQueryText', () => {
  const CASES: Array<[string, string]> = [
    [`ALTER ROLE app PASSWORD '${SECRET}'`, 'ALTER ROLE app PASSWORD ?'],
    [`CREATE ROLE x LOGIN PASSWORD $$${SECRET}$$`, 'CREATE ROLE x LOGIN PASSWORD ?'],
    [
      `CREATE ROLE x PASSWORD $pw$${SECRET} $ $x$ $pw$ VALID UNTIL 'infinity'`,
      'CREATE ROLE x PASSWORD ? VALID UNTIL ?',
    ],
    [`ALTER ROLE x PASSWORD E'${SECRET}\\' still secret'`, 'ALTER ROLE x PASSWORD ?'],
    [`ALTER ROLE x PASSWORD e'it''s ${SECRET}' LOGIN`, 'ALTER ROLE x PASSWORD ? LOGIN'],
    [`ALTER ROLE x PASSWORD U&'\\0041${SECRET}' UESCAPE '!'`, 'ALTER ROLE x PASSWORD ? UESCAPE ?'],
    [`SELECT 'it''s ${SECRET}', "col""umn's", x FROM t`, `SELECT ?, "col""umn's", x FROM t`],
    [`SELECT B'1010', X'FF', N'${SECRET}'`, 'SELECT ?, ?, ?'],
    [
      'SELECT 42, 3.14, .5, 1e10, 2.5E-3, 0x1F, 1_000_000 FROM t1 WHERE c2 = $1',
      'SELECT ?, ?, ?, ?, ?, ?, ? FROM t1 WHERE c2 = $1',
    ],
    [`SELECT 1 -- ${SECRET}\nFROM t`, 'SELECT ?  \nFROM t'],
    [`SELECT /* a /* nested ${SECRET} */ comment */ 1`, 'SELECT   ?'],
    [
      `CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '${SECRET}')`,
      'CREATE USER MAPPING FOR u SERVER s OPTIONS (user ?, password ?)',
    ],
    ['SELECT a$1, $2, a$b$ FROM "t$$x"', 'SELECT a$1, $2, a$b$ FROM "t$$x"'],
    ["SELECT interval '1 day', 1::int4, col_2", 'SELECT interval ?, ?::int4, col_2'],
    ['SELECT $$ $$', 'SELECT ?'],
  ];
  for (const [sql, masked] of CASES) {
    it(`masks ${JSON.stringify(sql.slice(0, 50))}`, () => {
      expect(maskQueryText(sql)).toBe(masked);
      expect(maskQueryText(sql)).not.toContain(SECRET);
    });
  }

  it('masks the rest of a text that ends inside a literal (cut short)', () => {
    for (const cut of [
      `ALTER ROLE x PASSWORD '${SECRET}`,
      `ALTER ROLE x PASSWORD E'${SECRET}\\'`,
      `ALTER ROLE x PASSWORD $pw$${SECRET}`,
      `ALTER ROLE x PASSWORD U&'${SECRET}`,
      `SELECT /* ${SECRET}`,
      'ALTER ROLE x PASSWORD $p',
    ])
      expect(maskQueryText(cut)).toMatch(/^ALTER ROLE x PASSWORD \?$|^SELECT\s+$/);
    expect(maskQueryText(`SELECT "unfinished ident ${SECRET}`)).toBe('SELECT "?');
  });

  it('masks everything after a plain string holding a backslash (either reading of it)', () => {
    // standard_conforming_strings on: two strings; off: one string, then the "secret" is code
    const sql = `SELECT 'a\\', '${SECRET}' , ${SECRET}`;
    expect(maskQueryText(sql)).toBe('SELECT ?');
  });

  it('cuts to a length after masking, never inside a character', () => {
    expect(maskQueryText(`ALTER ROLE x PASSWORD '${SECRET}' VALID UNTIL 'infinity'`, 24)).toBe(
      'ALTER ROLE x PASSWORD ? ',
    );
    expect(maskQueryText('SELECT "🐘🐘🐘"', 9)).toBe('SELECT "🐘');
  });

  it('never shows a secret in a literal, whatever is around it and wherever the text is cut', () => {
    // well-formed tokens, some holding quotes, dollars and comment marks where they mean nothing
    const around = [
      'x',
      't1',
      '"we\'ird $$ id"',
      "-- it's a comment\n",
      "/* it's /* nested */ $$ */",
      '$1',
      '42',
      '::',
      "'plain'",
      "E'esc\\'aped'",
      "$q$ dollar ' $q$",
      "U&'uni'",
      "'with\\backslash'",
      '(',
      ',',
      ';',
    ];
    const literals = [
      `'${SECRET}'`,
      `E'${SECRET}'`,
      `$$${SECRET}$$`,
      `$t$${SECRET}$t$`,
      `U&'${SECRET}'`,
      `N'${SECRET}'`,
      `'a''${SECRET}'`,
      `E'\\'${SECRET}'`,
    ];
    let seed = 7;
    const rnd = (k: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % k;
    };
    const some = () => Array.from({ length: rnd(6) }, () => around[rnd(around.length)]!);
    for (let t = 0; t < 400; t++) {
      const sql = [...some(), 'PASSWORD', literals[rnd(literals.length)]!, ...some()].join(' ');
      for (let cut = 0; cut <= sql.length; cut++) {
        const masked = maskQueryText(sql.slice(0, cut));
        expect(masked, sql.slice(0, cut)).not.toMatch(/S3c|3t-pw/);
      }
    }
  });
});
