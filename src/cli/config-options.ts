/** Every configuration field as a CLI flag (--db-pool-max 10), plus --config FILE. */
import { Option, type Command } from 'commander';
import { FIELDS, FIELD_NAMES, flagFor, type FieldName } from '../config/fields.js';
import type { LoadInput } from '../config/load.js';
import { editDistance } from '../core/edit-distance.js';

export function addConfigOptions(cmd: Command): Command {
  cmd.addOption(new Option('--config <file>', 'YAML or JSON config file (keys are the setting names)'));
  // every setting is a flag of every command, but listed once, by `pg-maintd help settings`:
  // sixty of them under each command would bury the command's own options
  for (const name of FIELD_NAMES) {
    const spec = FIELDS[name];
    cmd.addOption(new Option(`${flagFor(name)} <value>`, `${spec.doc} [env ${name}]`).hideHelp());
  }
  cmd.addHelpText(
    'after',
    "\nSettings: every setting is also a flag (DB_POOL_MAX is --db-pool-max). `pg-maintd help settings`\nlists them all; so does the README's configuration table.",
  );
  suggestHiddenFlags(cmd);
  return cmd;
}

/**
 * commander suggests only the flags its help lists: a mistyped setting flag (--db-pool-maks) still
 * gets its "did you mean".
 */
function suggestHiddenFlags(cmd: Command) {
  const c = cmd as unknown as { unknownOption(flag: string): void };
  const unknownOption = c.unknownOption.bind(cmd);
  c.unknownOption = (flag: string) => {
    if (flag.startsWith('--')) {
      const longs = cmd.options.map((o) => o.long).filter((l): l is string => !!l);
      const [near, distance] = longs
        .map((l) => [l, editDistance(flag, l)] as const)
        .sort((a, b) => a[1] - b[1])[0] ?? ['', Infinity];
      if (distance <= Math.max(1, Math.floor(flag.length / 4)))
        cmd.error(`error: unknown option '${flag}'\n(Did you mean ${near}?)`, {
          code: 'commander.unknownOption',
        });
    }
    unknownOption(flag);
  };
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
