/**
 * What every one-shot command starts with: the configuration loaded and its files checked, and a
 * logger on standard error, since standard output carries the command's result (`--json` goes to
 * jq). The configuration's warnings (unknown variables, risky settings) and notices (a defaulted
 * TLS mode) are logged once here, so each command says them the same way.
 */
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { createLogger, type Logger } from '../log/logger.js';
import { configInput } from './config-options.js';
import { preflight } from './preflight.js';

export function commandConfig(
  opts: Record<string, unknown>,
  o: { databaseOptional?: boolean } = {},
): { loaded: LoadedConfig; logger: Logger } {
  const loaded = preflight(loadConfig({ ...configInput(opts), databaseOptional: o.databaseOptional }));
  const logger = createLogger({ ...loaded.config.log, secrets: loaded.secrets, destination: process.stderr });
  for (const w of loaded.warnings) logger.warn({ setting: true }, w);
  // a placeholder database that is never connected to has no TLS mode to speak of
  const placeholder = o.databaseOptional && loaded.origins.DATABASE_URL?.kind === 'built-in';
  if (!placeholder) for (const n of loaded.notices) logger.info({ setting: true }, n);
  return { loaded, logger };
}
