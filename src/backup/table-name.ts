/**
 * Table names as the manifest stores them: `format('%I.%I', schema, table)`. A name read back from a
 * manifest is parsed strictly into its two identifiers and only ever reaches SQL quoted again, so a
 * crafted manifest cannot smuggle SQL into the drill's counts.
 */
import pg from 'pg';

export interface TableName {
  schema: string;
  table: string;
}

// quote_ident leaves an identifier unquoted only when it is lowercase letters, digits and underscores
const UNQUOTED = /^[a-z_][a-z0-9_]*/;
const QUOTED = /^"((?:[^"\0]|"")+)"/;

function identifier(s: string): { name: string; rest: string } | undefined {
  const q = QUOTED.exec(s);
  if (q) return { name: q[1]!.replaceAll('""', '"'), rest: s.slice(q[0].length) };
  const u = UNQUOTED.exec(s);
  if (u) return { name: u[0], rest: s.slice(u[0].length) };
  return undefined;
}

/** `schema.table` (each part plain or double-quoted) into its parts; undefined for anything else. */
export function parseTableName(text: string): TableName | undefined {
  if (text.length > 300) return undefined;
  const schema = identifier(text);
  if (!schema || !schema.rest.startsWith('.')) return undefined;
  const table = identifier(schema.rest.slice(1));
  if (!table || table.rest !== '') return undefined;
  if (Buffer.byteLength(schema.name) > 63 || Buffer.byteLength(table.name) > 63) return undefined;
  return { schema: schema.name, table: table.name };
}

/** The name quoted for SQL: the only form in which a name read from the store reaches a statement. */
export function quotedTableName(t: TableName): string {
  return `${pg.escapeIdentifier(t.schema)}.${pg.escapeIdentifier(t.table)}`;
}
