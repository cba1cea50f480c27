/**
 * Whether the daemon's role may vacuum or reindex a table, as SQL over pg_class `c`. Without the
 * right, VACUUM only warns ("skipping ... only table or database owner can vacuum it") and REINDEX
 * fails, so such tables are left out of the plan and listed as not permitted.
 * PostgreSQL 17 added the MAINTAIN privilege (and the pg_maintain role); before it, the owner
 * (or, for VACUUM, the database owner) or a superuser.
 */
const MAINTAIN_SINCE = 170000;

export function canVacuum(serverVersion: number, c = 'c'): string {
  if (serverVersion >= MAINTAIN_SINCE) return `has_table_privilege(${c}.oid, 'MAINTAIN')`;
  return `(pg_has_role(${c}.relowner, 'USAGE') OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE'))`;
}

export function canReindex(serverVersion: number, c = 'c'): string {
  if (serverVersion >= MAINTAIN_SINCE) return `has_table_privilege(${c}.oid, 'MAINTAIN')`;
  return `pg_has_role(${c}.relowner, 'USAGE')`;
}

/** Schemas maintenance never touches (the catalogs, TOAST, temporary schemas): the metrics' too. */
export { userSchema } from '../db/bloat-estimate.js';
