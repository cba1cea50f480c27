/** `pg-maintd check-config`: the effective configuration, secrets masked, with where each value came from. */
import { FIELDS, FIELD_NAMES, type FieldSpec } from '../config/fields.js';
import { describeOrigin, type LoadedConfig } from '../config/load.js';
import { maskValue } from '../core/mask.js';

export function renderConfig(loaded: LoadedConfig, json: boolean): string {
  const rows = FIELD_NAMES.map((name) => {
    const spec: FieldSpec = FIELDS[name];
    const raw = loaded.raw[name];
    return {
      name,
      value: raw === undefined ? null : maskValue(raw, spec.secret ?? false),
      source: loaded.origins[name] ? describeOrigin(loaded.origins[name]) : 'unset',
    };
  });
  if (json)
    return JSON.stringify(
      { valid: true, settings: rows, warnings: loaded.warnings, notices: loaded.notices },
      null,
      2,
    );
  const width = Math.max(...rows.map((r) => r.name.length));
  const lines = rows.map((r) => `${r.name.padEnd(width)}  ${r.value ?? '(unset)'}    # ${r.source}`);
  const warnings = loaded.warnings.map((w) => `warning: ${w}`);
  const notices = loaded.notices.map((n) => `note: ${n}`);
  return [...lines, '', 'configuration is valid', ...warnings, ...notices].join('\n');
}
