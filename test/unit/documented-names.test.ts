// What the docs tell an operator to type must exist: every `pg-maintd <command>` they show is a
// command of the program, and every setting they name is a setting. A rename that forgets the docs
// fails here instead of in someone's terminal.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { FIELD_NAMES } from '../../src/config/fields.js';
import { PACKAGE_ROOT } from '../../src/config/load.js';

/** Names with a settings prefix that are not settings, each with the place that defines it. */
const NOT_SETTINGS: Record<string, string> = {
  PG_CLIENT_MAJOR: 'Dockerfile',
  // the unknown-variable warning: typos it catches, and variables others set that it leaves alone
  BACKUP_SHEDULE: 'test/e2e/bad-input.test.ts',
  DB_SSLMODE: 'test/e2e/bad-input.test.ts',
  HTTP_PROXY: 'src/config/env-names.ts',
  WEB_CONCURRENCY: 'src/config/env-names.ts',
  METRICS_SERVICE_HOST: 'test/e2e/bad-input.test.ts',
  METRICS_PORT_9187_TCP: 'test/e2e/bad-input.test.ts',
};

function filesUnder(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path, ext));
    else if (ext.test(name)) out.push(path);
  }
  return out;
}

const DOCS = [
  join(PACKAGE_ROOT, 'README.md'),
  ...filesUnder(join(PACKAGE_ROOT, 'docs'), /\.md$/),
  ...filesUnder(join(PACKAGE_ROOT, 'config'), /\.ya?ml$/),
  ...filesUnder(join(PACKAGE_ROOT, 'deploy'), /\.(ya?ml|md|json)$/),
].map((path) => ({ path: relative(PACKAGE_ROOT, path), text: readFileSync(path, 'utf8') }));

/** Command lines the docs show: inline code and lines of fenced blocks that start with pg-maintd. */
function documentedCommandLines(text: string): string[] {
  const lines: string[] = [];
  for (const m of text.matchAll(/`(pg-maintd [^`\n]+)`/g)) lines.push(m[1]!);
  for (const block of text.matchAll(/```[a-z]*\n([\s\S]*?)```/g)) {
    for (const line of block[1]!.split('\n')) {
      const m = /^\s*(?:\$\s+)?(pg-maintd\s.*)$/.exec(line);
      if (m) lines.push(m[1]!);
    }
  }
  return lines;
}

/**
 * The command path a line names, resolved against the program, or the word that is no command.
 * `pg-maintd migrate up --json` is [migrate, up]; `pg-maintd --http-port 1` is the default `run`.
 */
function resolve(program: Command, line: string): { path: string[] } | { unknown: string } {
  const words = line.replace(/^pg-maintd\s+/, '').split(/\s+/);
  const path: string[] = [];
  let at = program;
  for (const word of words) {
    if (!/^[a-z][a-z-]*$/.test(word)) break;
    if (at.commands.length === 0) break; // the rest are arguments
    const next = at.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!next) {
      // `pg-maintd [run]`-style usage lines and prose words after a leaf are not commands
      if (at === program && path.length === 0) return { unknown: word };
      break;
    }
    path.push(word);
    at = next;
  }
  return { path };
}

describe('documented names', () => {
  it('every pg-maintd command the docs show exists', () => {
    const program = buildProgram();
    const problems: string[] = [];
    let checked = 0;
    for (const doc of DOCS) {
      for (const line of documentedCommandLines(doc.text)) {
        // usage syntax such as `pg-maintd [run]` or `pg-maintd <command> --help`
        if (/^pg-maintd\s+[[<|]/.test(line)) continue;
        const r = resolve(program, line);
        if ('unknown' in r) problems.push(`${doc.path}: \`${line}\`: no command "${r.unknown}"`);
        else checked++;
      }
    }
    expect(problems).toEqual([]);
    // the README's command list alone shows more than a dozen
    expect(checked).toBeGreaterThan(20);
  });

  it('a group command in the docs names a subcommand that exists', () => {
    const program = buildProgram();
    const groups = program.commands.filter((c) => c.commands.length > 0);
    expect(groups.length).toBeGreaterThan(0);
    const problems: string[] = [];
    for (const doc of DOCS) {
      for (const line of documentedCommandLines(doc.text)) {
        const words = line.replace(/^pg-maintd\s+/, '').split(/\s+/);
        const group = groups.find((g) => g.name() === words[0]);
        const sub = words[1];
        if (!group || sub === undefined || !/^[a-z][a-z-]*$/.test(sub)) continue;
        // `migrate up | status | verify` lists alternatives: check each
        const alternatives = line
          .replace(/^pg-maintd\s+\S+\s+/, '')
          .split(/\s*\|\s*/)
          .map((w) => w.split(/\s+/)[0]!)
          .filter((w) => /^[a-z][a-z-]*$/.test(w));
        for (const name of alternatives) {
          if (!group.commands.some((c) => c.name() === name))
            problems.push(`${doc.path}: \`${line}\`: "${group.name()}" has no subcommand "${name}"`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('every setting the docs name is a setting', () => {
    const settings = new Set<string>(FIELD_NAMES);
    const prefixes = new Set(FIELD_NAMES.map((n) => n.split('_')[0]!));
    const problems: string[] = [];
    for (const doc of DOCS) {
      for (const m of doc.text.matchAll(/\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b/g)) {
        const name = m[1]!;
        if (!prefixes.has(name.split('_')[0]!) || settings.has(name)) continue;
        const definedIn = NOT_SETTINGS[name];
        if (definedIn && readFileSync(join(PACKAGE_ROOT, definedIn), 'utf8').includes(name)) continue;
        problems.push(`${doc.path}: ${name} is not a setting`);
      }
    }
    expect([...new Set(problems)]).toEqual([]);
  });

  it('catches a command or setting that does not exist', () => {
    const program = buildProgram();
    expect(resolve(program, 'pg-maintd backupz --json')).toEqual({ unknown: 'backupz' });
    expect(resolve(program, 'pg-maintd migrate up --json')).toEqual({ path: ['migrate', 'up'] });
    expect(
      documentedCommandLines('run `pg-maintd backupz` now\n```sh\n$ pg-maintd restore --latest\n```'),
    ).toEqual(['pg-maintd backupz', 'pg-maintd restore --latest']);
    expect(FIELD_NAMES).not.toContain('BACKUP_SHEDULE');
  });
});
