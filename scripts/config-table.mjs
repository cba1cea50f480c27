#!/usr/bin/env node
// Regenerates the README's configuration table from the schema (src/config/fields.ts, built to dist/).
import { readFileSync, writeFileSync } from 'node:fs';

const { configTable } = await import('../dist/config/table.js');
const path = new URL('../README.md', import.meta.url);
const readme = readFileSync(path, 'utf8');
const re = /(<!-- config-table:start[^>]*-->\n)[\s\S]*?(\n<!-- config-table:end -->)/;
if (!re.test(readme)) {
  process.stderr.write('README.md has no config-table markers\n');
  process.exit(1);
}
writeFileSync(
  path,
  readme.replace(re, (_, start, end) => `${start}${configTable()}${end}`),
);
process.stdout.write('README.md configuration table updated; run `npx prettier --write README.md`\n');
