/**
 * `pg-maintd help settings`: every setting, grouped as in the README's configuration table, with its
 * flag, its default and what it means. A command's own --help lists only its own options.
 */
import { FIELDS, FIELD_NAMES, flagFor, type FieldSpec } from '../config/fields.js';

const WIDTH = 100;

export function renderSettingsHelp(): string {
  const groups = new Map<string, string[]>();
  for (const name of FIELD_NAMES) {
    const spec: FieldSpec = FIELDS[name];
    const head = `  ${name}, ${flagFor(name)} <value>${
      spec.required ? ' (required)' : spec.default !== undefined ? ` (default: ${String(spec.default)})` : ''
    }`;
    const lines = groups.get(spec.group) ?? [];
    lines.push(head, ...wrap(spec.doc, WIDTH - 6).map((l) => `      ${l}`));
    groups.set(spec.group, lines);
  }
  const out = [
    'Settings: each is an environment variable, a key of the config file (--config / CONFIG_FILE), and a',
    'flag of every command, e.g. DB_POOL_MAX=10 or --db-pool-max 10. Flags win over the environment,',
    "which wins over the file. The README's configuration table says the same, with what is allowed.",
  ];
  for (const [group, lines] of groups) out.push('', `${group}:`, ...lines);
  return `${out.join('\n')}\n`;
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}
