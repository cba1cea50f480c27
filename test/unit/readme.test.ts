// The README is the front door: its configuration table and Quickstart must stay true.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';
import { configTable } from '../../src/config/table.js';

const readme = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8');
const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
};

describe('README', () => {
  it('carries the configuration table generated from the schema', () => {
    const m = /<!-- config-table:start[^>]*-->\n([\s\S]*?)\n<!-- config-table:end -->/.exec(readme);
    expect(m, 'config table markers').not.toBeNull();
    // Compare cell by cell: prettier pads the columns of the README's copy.
    const cells = (table: string) =>
      table
        .trim()
        .split('\n')
        .map((row) =>
          row
            .split(/(?<!\\)\|/)
            .slice(1, -1)
            .map((c) => (/^\s*-+\s*$/.test(c) ? '---' : c.trim())),
        );
    expect(cells(m![1]!)).toEqual(cells(configTable()));
  });

  it('has a Quickstart of exactly two commands: run the daemon, run the tests', () => {
    const section = readme.split('## Quickstart')[1]!.split('\n## ')[0]!;
    const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((b) => b[1]!.trim());
    const commands = blocks[1]!.split('\n');
    expect(commands).toEqual(['npm ci && npm run demo', 'npm test']);
    expect(pkg.scripts.demo).toContain('demo');
    expect(pkg.scripts.test).toBe('vitest run');
  });
});
