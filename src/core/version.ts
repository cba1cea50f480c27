import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
/** The package version (dist/core/version.js and src/core/version.ts both sit two levels under the root). */
export const VERSION: string = pkg.version;
