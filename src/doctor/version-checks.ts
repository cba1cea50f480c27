/** The server version pg-maintd supports, and a pg_dump that can dump it. */
import { IMAGE_CLIENT_MAJOR, toolMajor } from '../programs/client-tools.js';
import { OperatorError } from '../core/errors.js';
import type { Check } from './finding.js';

const MIN_MAJOR = 13;
const MAX_TESTED_MAJOR = 18;

export const serverVersionCheck: Check = {
  ids: ['server.version'],
  async run({ facts }) {
    const major = Math.floor(facts.serverVersionNum / 10000);
    const found = `PostgreSQL ${facts.serverVersion}`;
    const base = { id: 'server.version', title: `server version is ${MIN_MAJOR} or later`, found };
    if (major < MIN_MAJOR)
      return {
        ...base,
        status: 'fail',
        why: `pg-maintd supports PostgreSQL ${MIN_MAJOR} to ${MAX_TESTED_MAJOR}; older servers lack views and columns its collectors and jobs use, and are out of community support`,
        fix: { steps: [`upgrade the server to PostgreSQL ${MIN_MAJOR} or later (pg_upgrade)`] },
      };
    if (major > MAX_TESTED_MAJOR)
      return {
        ...base,
        status: 'warn',
        why: `pg-maintd is tested against PostgreSQL ${MIN_MAJOR} to ${MAX_TESTED_MAJOR}; a newer major may rename views or columns`,
        fix: { steps: ['check the pg-maintd release notes for support of this major version'] },
      };
    return {
      ...base,
      status: 'ok',
      why: `pg-maintd supports PostgreSQL ${MIN_MAJOR} to ${MAX_TESTED_MAJOR}`,
    };
  },
};

export const pgDumpCheck: Check = {
  ids: ['client.pg_dump'],
  async run({ config, facts }) {
    const serverMajor = Math.floor(facts.serverVersionNum / 10000);
    const base = {
      id: 'client.pg_dump',
      title: 'pg_dump is as new as the server',
      why: 'pg_dump refuses to dump a server of a newer major version, so every backup would fail',
    };
    const needed = config.backup.schedule !== 'off' || config.verify.schedule !== 'off';
    let tool: { major: number; version: string };
    try {
      tool = await toolMajor('pg_dump', config.backup.clientBinDir);
    } catch (err) {
      if (!(err instanceof OperatorError)) throw err;
      return {
        ...base,
        status: needed ? 'fail' : 'info',
        found: err.message,
        fix: { steps: [`install postgresql-client-${serverMajor} or newer, or set PG_CLIENT_BIN_DIR`] },
      };
    }
    const found = `pg_dump ${tool.version}, server ${serverMajor}`;
    if (tool.major >= serverMajor) return { ...base, status: 'ok', found };
    return {
      ...base,
      status: 'fail',
      found,
      fix: {
        steps: [
          `install postgresql-client-${serverMajor} or newer (the Docker image ships ${IMAGE_CLIENT_MAJOR}) and point PG_CLIENT_BIN_DIR at its bin folder`,
        ],
      },
    };
  },
};
