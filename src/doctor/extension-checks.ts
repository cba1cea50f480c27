/** pg_stat_statements, which the seed guide's slow-query hunt reads: preloaded, and installed in the database. */
import { quoteLiteral, type Check } from './finding.js';

// The library defines its settings only when loaded by shared_preload_libraries (placeholders are not
// in pg_settings), so this works for any role; shared_preload_libraries itself is readable only with
// pg_read_all_settings.
const LOADED_SQL = `EXISTS (SELECT 1 FROM pg_settings WHERE name = 'pg_stat_statements.max')`;
const PRELOAD_SQL = `
  SELECT ${LOADED_SQL} AS loaded,
         CASE WHEN pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')
              THEN current_setting('shared_preload_libraries') END AS preload`;

const statementsPreloaded: Check = {
  ids: ['pg_stat_statements.preloaded'],
  async run({ client }) {
    const r = (await client.query<{ loaded: boolean; preload: string | null }>(PRELOAD_SQL)).rows[0]!;
    const list =
      r.preload === null
        ? undefined
        : r.preload
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
    const shown = list === undefined ? '(not readable without pg_read_all_settings)' : `'${list.join(',')}'`;
    const base = {
      id: 'pg_stat_statements.preloaded',
      title: 'pg_stat_statements is in shared_preload_libraries',
      why: 'slow queries are found in pg_stat_statements, and the view errors ("must be loaded via shared_preload_libraries") unless the library is preloaded; pg-maintd exports no statement metrics without it',
    };
    if (r.loaded) return { ...base, status: 'ok', found: `loaded (shared_preload_libraries = ${shown})` };
    const wanted = [...(list ?? []), 'pg_stat_statements'].join(',');
    return {
      ...base,
      status: 'warn',
      found: `not loaded (shared_preload_libraries = ${shown})`,
      fix: {
        sql: [`ALTER SYSTEM SET shared_preload_libraries = ${quoteLiteral(wanted)};`],
        steps: [
          ...(list === undefined
            ? [
                'keep the libraries already listed: a superuser sees them with SHOW shared_preload_libraries, and the list above must include them',
              ]
            : []),
          'restart PostgreSQL (e.g. systemctl restart postgresql, or pg_ctl restart -D <data dir>); on a managed service, set it in the parameter group and reboot',
          'then: CREATE EXTENSION IF NOT EXISTS pg_stat_statements;',
        ],
        restart: true,
      },
    };
  },
};

const INSTALLED_SQL = `
  SELECT e.extversion AS installed, a.default_version AS available, ${LOADED_SQL} AS loaded
    FROM (SELECT 1) one
    LEFT JOIN pg_extension e ON e.extname = 'pg_stat_statements'
    LEFT JOIN pg_available_extensions a ON a.name = 'pg_stat_statements'`;

const statementsInstalled: Check = {
  ids: ['pg_stat_statements.installed'],
  async run({ client, facts }) {
    const r = (
      await client.query<{ installed: string | null; available: string | null; loaded: boolean }>(
        INSTALLED_SQL,
      )
    ).rows[0]!;

    const base = {
      id: 'pg_stat_statements.installed',
      title: `pg_stat_statements is installed in ${facts.database}`,
      why: 'the pg_stat_statements view exists only after CREATE EXTENSION, in the database pg-maintd connects to',
    };
    if (r.installed === null && r.available === null)
      return {
        ...base,
        status: 'warn',
        found: 'not installed, and not available on the server',
        fix: {
          steps: [
            'install the contrib modules on the database server (Debian/Ubuntu: postgresql-<major>, which ships them; RHEL: postgresql<major>-contrib)',
            'then: CREATE EXTENSION IF NOT EXISTS pg_stat_statements;',
          ],
        },
      };
    if (r.installed === null)
      return {
        ...base,
        status: 'warn',
        found: `not installed (version ${r.available} available)`,
        fix: {
          sql: ['CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;'],
          ...(r.loaded
            ? { remedies: [{ kind: 'create_extension', extension: 'pg_stat_statements' }] }
            : { steps: ['preload it first (see pg_stat_statements.preloaded); the view errors until then'] }),
        },
      };
    if (r.available !== null && r.available !== r.installed)
      return {
        ...base,
        status: 'info',
        found: `installed, version ${r.installed} (${r.available} available)`,
        why: 'an extension is not updated by a server upgrade; the newer version has more columns',
        fix: { sql: ['ALTER EXTENSION pg_stat_statements UPDATE;'] },
      };
    return { ...base, status: 'ok', found: `installed, version ${r.installed}` };
  },
};

export function extensionChecks(): Check[] {
  return [statementsPreloaded, statementsInstalled];
}
