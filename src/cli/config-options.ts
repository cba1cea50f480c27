/** Every configuration field as a CLI flag (--db-pool-max 10), plus --config FILE. */
import { Option, type Command } from 'commander';
import { FIELDS, FIELD_NAMES, flagFor, type FieldName } from '../config/fields.js';
import type { LoadInput } from '../config/load.js';

export function addConfigOptions(cmd: Command): Command {
  cmd.addOption(new Option('--config <file>', 'YAML or JSON config file (keys are the setting names below)'));
  for (const name of FIELD_NAMES) {
    const spec = FIELDS[name];
    cmd.addOption(new Option(`${flagFor(name)} <value>`, `${spec.doc} [env ${name}]`));
  }
  cmd.addHelpText(
    'after',
    '\nEvery setting in the README configuration table is also a flag: DB_POOL_MAX is --db-pool-max.',
  );
  return cmd;
}

/** Maps commander's parsed options back to field names. */
export function configInput(opts: Record<string, unknown>): LoadInput {
  const flags: Partial<Record<FieldName, string>> = {};
  for (const name of FIELD_NAMES) {
    const key = camel(flagFor(name).slice(2));
    const v = opts[key];
    if (typeof v === 'string') flags[name] = v;
  }
  return { flags, ...(typeof opts.config === 'string' ? { configFile: opts.config } : {}) };
}

function camel(kebab: string): string {
  return kebab.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}
