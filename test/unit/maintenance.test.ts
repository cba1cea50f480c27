// The pure parts of maintenance: the statements (identifiers quoted) and how a step's result is judged.
import { describe, expect, it } from 'vitest';
import { statementFor, type PlannedIndex, type PlannedTable } from '../../src/maintenance/plan.js';
import { resultOf, type Outcome } from '../../src/maintenance/step.js';

const table = (action: PlannedTable['action']): PlannedTable => ({
  kind: 'table',
  schema: 'My Schema',
  name: 'we"ird; DROP TABLE x',
  action,
  why: '',
  deadTuples: 0,
  liveTuples: 0,
});
const index = (action: PlannedIndex['action']): PlannedIndex => ({
  kind: 'index',
  oid: 1,
  schema: 'public',
  table: 't',
  name: 'Idx',
  action,
  why: '',
  sizeBytes: 0,
});

describe('maintenance statements', () => {
  it('quotes identifiers, and never uses the blanket or locking forms', () => {
    expect(statementFor(table('vacuum_analyze'))).toBe(
      'VACUUM (ANALYZE) "My Schema"."we""ird; DROP TABLE x"',
    );
    expect(statementFor(table('analyze'))).toBe('ANALYZE "My Schema"."we""ird; DROP TABLE x"');
    expect(statementFor(index('reindex_invalid'))).toBe('REINDEX INDEX CONCURRENTLY "public"."Idx"');
    expect(statementFor(index('reindex_bloat'))).toBe('REINDEX INDEX CONCURRENTLY "public"."Idx"');
    expect(statementFor(index('drop_leftover'))).toBe('DROP INDEX CONCURRENTLY IF EXISTS "public"."Idx"');
  });
});

describe('step results', () => {
  const items = (...outcomes: Outcome[]) => outcomes.map((outcome) => ({ item: {}, outcome }));
  const done: Outcome = { status: 'done', seconds: 1 };
  const locked: Outcome = { status: 'lock_timeout', seconds: 1 };
  const failed: Outcome = { status: 'failed', error: 'x', code: '23505' };

  it('success when all was done (a table dropped meanwhile does not count against it)', () => {
    expect(resultOf(items())).toBe('success');
    expect(resultOf(items(done, { status: 'gone' }))).toBe('success');
  });
  it('partial when something waited past lock_timeout, failure when a statement failed', () => {
    expect(resultOf(items(done, locked))).toBe('partial');
    expect(resultOf(items(locked, failed))).toBe('failure');
    expect(resultOf(items(done), 'failed')).toBe('failure');
  });
  it('aborted wins', () => {
    expect(resultOf(items(failed), 'aborted')).toBe('aborted');
  });
});
