/**
 * Migration files: `NNNN_name.sql`, plain SQL a DBA can read. A file whose first lines carry
 * `-- pg-maintd: no-transaction` runs outside a transaction (CREATE INDEX CONCURRENTLY) and must hold
 * a single statement. The checksum is SHA-256 of the file's bytes.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OperatorError, errorMessage } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

export interface MigrationFile {
  version: number;
  name: string;
  /** NNNN_name.sql */
  file: string;
  path: string;
  sql: string;
  checksum: string;
  transactional: boolean;
}

const NAME_RE = /^(\d{4})_([a-z0-9_]+)\.sql$/;
const NO_TX_RE = /^\s*--\s*pg-maintd:\s*no-transaction\s*$/m;

export function loadMigrations(dir: string): MigrationFile[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (err) {
    throw new OperatorError(`cannot read the migrations folder ${dir}: ${errorMessage(err)}`, {
      hint: 'set MIGRATIONS_DIR to the folder holding the NNNN_name.sql files',
      exitCode: EXIT.CONFIG,
    });
  }
  const out: MigrationFile[] = [];
  for (const file of entries.filter((f) => f.endsWith('.sql')).sort()) {
    const m = NAME_RE.exec(file);
    if (!m)
      throw new OperatorError(`migration file ${file} is not named NNNN_name.sql`, {
        hint: 'rename it, e.g. 0008_add_labels.sql (four digits, lower-case words and underscores)',
        exitCode: EXIT.CONFIG,
      });
    const path = join(dir, file);
    const bytes = readFileSync(path);
    const sql = bytes.toString('utf8');
    const transactional = !NO_TX_RE.test(sql.split('\n').slice(0, 5).join('\n'));
    const version = Number(m[1]);
    if (out.some((x) => x.version === version))
      throw new OperatorError(`two migration files have the number ${m[1]}`, {
        hint: 'give each migration its own number',
        exitCode: EXIT.CONFIG,
      });
    if (!transactional && countStatements(sql) !== 1)
      throw new OperatorError(
        `${file} is marked no-transaction but holds ${countStatements(sql)} statements`,
        {
          hint: 'a migration that runs outside a transaction must hold exactly one statement: split it into files',
          exitCode: EXIT.CONFIG,
        },
      );
    out.push({
      version,
      name: m[2]!,
      file,
      path,
      sql,
      checksum: createHash('sha256').update(bytes).digest('hex'),
      transactional,
    });
  }
  return out;
}

/** Statements in `sql`, not counting comments or empty ones; quotes and dollar quotes respected. */
function countStatements(sql: string): number {
  let n = 0;
  let content = false;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i]!;
    if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? sql.length : end;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? sql.length : end + 1;
    } else if (c === "'" || c === '"') {
      content = true;
      let j = i + 1;
      while (j < sql.length && !(sql[j] === c && sql[j + 1] !== c)) j += sql[j] === c ? 2 : 1;
      i = j;
    } else if (c === '$') {
      const tag = /^\$[A-Za-z_]*\$/.exec(sql.slice(i))?.[0];
      content = true;
      if (tag) {
        const end = sql.indexOf(tag, i + tag.length);
        i = end < 0 ? sql.length : end + tag.length - 1;
      }
    } else if (c === ';') {
      if (content) n++;
      content = false;
    } else if (!/\s/.test(c)) content = true;
  }
  return content ? n + 1 : n;
}

/** The index a single CREATE INDEX CONCURRENTLY statement builds, for the repair of an invalid one. */
export function concurrentIndexName(
  sql: string,
): { schema: string | undefined; name: string; table: string | undefined } | undefined {
  const m =
    /create\s+(?:unique\s+)?index\s+concurrently\s+(?:if\s+not\s+exists\s+)?(?:("?)([a-z_][a-z0-9_$]*)\1\.)?("?)([a-z_][a-z0-9_$]*)\3\s+on\s+(?:only\s+)?(?:("?)[a-z_][a-z0-9_$]*\5\.)?(?:("?)([a-z_][a-z0-9_$]*)\6)?/i.exec(
      sql,
    );
  if (!m) return undefined;
  const fold = (quoted: string | undefined, id: string) => (quoted ? id : id.toLowerCase());
  return {
    schema: m[2] ? fold(m[1], m[2]) : undefined,
    name: fold(m[3], m[4]!),
    table: m[7] ? fold(m[6], m[7]) : undefined,
  };
}

/** Tables a migration creates (CREATE TABLE name), to recognise a schema someone else already built. */
export function createdTables(sql: string): string[] {
  return [
    ...sql.matchAll(/create\s+table\s+(?:if\s+not\s+exists\s+)?(?:[a-z_][a-z0-9_]*\.)?([a-z_][a-z0-9_]*)/gi),
  ].map((m) => m[1]!.toLowerCase());
}
