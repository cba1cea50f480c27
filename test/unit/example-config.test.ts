// config/example.yaml is the annotated file operators start from: it must name every setting under
// its group's heading, show each default as it is, and load.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIELDS, FIELD_NAMES, type FieldSpec } from '../../src/config/fields.js';
import { loadConfig, PACKAGE_ROOT } from '../../src/config/load.js';

const EXAMPLE = join(PACKAGE_ROOT, 'config', 'example.yaml');
const text = readFileSync(EXAMPLE, 'utf8');
const lines = text.split('\n');
const scratch = mkdtempSync(join(tmpdir(), 'pgmaintd-example-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The line that sets `name`, active or commented out. */
const settingLines = (name: string) => lines.filter((l) => new RegExp(`^(# )?${name}:`).test(l));

/** The configuration from a file of these lines, over the built-in defaults, as the CLI loads it. */
function loadLines(name: string, content: string) {
  const file = join(scratch, `${name}.yaml`);
  writeFileSync(file, content);
  return loadConfig({ configFile: file, env: { DATABASE_URL: 'postgresql://pgmaintd@db.internal:5432/app' } })
    .config;
}

describe('config/example.yaml', () => {
  it('names every setting once', () => {
    const missing = FIELD_NAMES.filter((n) => settingLines(n).length !== 1);
    expect(missing).toEqual([]);
  });

  it('puts every setting under its group heading', () => {
    const groups = [...new Set(FIELD_NAMES.map((n) => (FIELDS[n] as FieldSpec).group))];
    const headings = lines.map((l, i) => [i, /^# --- (\w+)/.exec(l)?.[1]] as const).filter(([, g]) => g);
    expect(headings.map(([, g]) => g).sort()).toEqual([...groups].sort());
    for (const name of FIELD_NAMES) {
      const at = lines.findIndex((l) => new RegExp(`^(# )?${name}:`).test(l));
      const under = headings.filter(([i]) => i < at).at(-1)?.[1];
      expect(under, name).toBe((FIELDS[name] as FieldSpec).group);
    }
  });

  it('a commented-out setting with a default shows that default', () => {
    const wrong: string[] = [];
    const defaults = loadLines('none', '');
    for (const name of FIELD_NAMES) {
      if ((FIELDS[name] as FieldSpec).default === undefined) continue;
      const line = settingLines(name)[0]!;
      if (!line.startsWith('# ')) continue;
      const setting = line.slice(2).replace(/\s+#.*$/, '');
      if (JSON.stringify(loadLines(name, `${setting}\n`)) !== JSON.stringify(defaults)) wrong.push(setting);
    }
    expect(wrong).toEqual([]);
  });

  it('loads as it is, with the defaults of the installation', () => {
    const { config } = loadConfig({ configFile: EXAMPLE, env: {} });
    expect(config.db.url).toBe('postgresql://pgmaintd@db.internal:5432/app');
    expect(config.http.port).toBe(9188);
    expect(config.log.format).toBe('json');
  });
});
