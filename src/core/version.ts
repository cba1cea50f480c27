import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
/** The package version (dist/version.js and src/version.ts both sit one level under the root). */
export const VERSION: string = pkg.version;
