/** The README's configuration table, generated from the schema (`npm run docs:config`). */
import { FIELDS, FIELD_NAMES, type FieldSpec } from './fields.js';

export function configTable(): string {
  const rows = FIELD_NAMES.map((name) => {
    const spec: FieldSpec = FIELDS[name];
    const def = spec.required
      ? '_(required)_'
      : spec.default === undefined
        ? '_(unset)_'
        : `\`${spec.default}\``;
    return `| \`${name}\` | ${def} | ${spec.doc.replace(/\|/g, '\\|')} |`;
  });
  return ['| Variable | Default | Meaning |', '| --- | --- | --- |', ...rows].join('\n');
}
