/**
 * What maintenance would do, and why: the planned items, the statements that carry them out, and
 * how the reasons are worded. The SQL that picks them is in table-plan.ts and index-plan.ts; it
 * reads statistics and catalogs only, so a dry run changes nothing.
 */
import { escapeIdentifier } from 'pg';
import type { Config } from '../config/load.js';

export type Thresholds = Config['maintenance'];

export type TableAction = 'vacuum_analyze' | 'analyze';
export type IndexAction = 'drop_leftover' | 'reindex_invalid' | 'reindex_bloat';

export interface PlannedTable {
  kind: 'table';
  schema: string;
  name: string;
  action: TableAction;
  /** Why, for people: "dead rows 45000 of 50000 (90%) >= 20% and >= 1000". */
  why: string;
  deadTuples: number;
  liveTuples: number;
}

export interface PlannedIndex {
  kind: 'index';
  oid: number;
  schema: string;
  table: string;
  name: string;
  action: IndexAction;
  why: string;
  sizeBytes: number;
  /** Bloat candidates: the statistics estimate, and the pgstatindex measure when there is one. */
  estimatedBloat?: number;
  measuredBloat?: number;
}

export interface Skipped {
  kind: 'table' | 'index';
  schema: string;
  name: string;
  why: string;
}

export interface TablePlan {
  tables: PlannedTable[];
  /** Tables that need work the role may not do, or that are otherwise left alone. */
  skipped: Skipped[];
}

export interface IndexPlan {
  indexes: PlannedIndex[];
  skipped: Skipped[];
}

export function qualified(schema: string, name: string): string {
  return `${escapeIdentifier(schema)}.${escapeIdentifier(name)}`;
}

/** The statement that carries out a planned item; none of them may run inside a transaction block. */
export function statementFor(item: PlannedTable | PlannedIndex): string {
  const target = qualified(item.schema, item.name);
  switch (item.action) {
    case 'vacuum_analyze':
      return `VACUUM (ANALYZE) ${target}`;
    case 'analyze':
      return `ANALYZE ${target}`;
    case 'drop_leftover':
      return `DROP INDEX CONCURRENTLY IF EXISTS ${target}`;
    case 'reindex_invalid':
    case 'reindex_bloat':
      return `REINDEX INDEX CONCURRENTLY ${target}`;
  }
}

export const pct = (r: number) => `${Math.round(r * 100)}%`;
export function age(s: number | null): string {
  if (s === null) return 'never';
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
  ] as const)
    if (s >= size) return `${Math.floor(s / size)}${unit} ago`;
  return `${Math.floor(s)}s ago`;
}
