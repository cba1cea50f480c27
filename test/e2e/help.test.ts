// --help through the real CLI: a command lists its own options and points to `help settings`, which
// lists every setting; the setting flags, unlisted, still work on every command.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';
import { FIELDS, FIELD_NAMES, flagFor } from '../../src/config/fields.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { runCli } from '../support/daemon.js';

const POINTER = /`pg-maintd help settings`\s+lists them all; so does the README's configuration table/;

describe('pg-maintd <command> --help', () => {
  it.each([
    ['backup', ['--database <name>', '--config <file>']],
    ['maintenance run', ['--dry-run', '--database <name>', '--job <step>', '--json']],
    ['doctor', ['--apply', '--connections-warn <percent>', '--json']],
    ['migrate status', ['--json', '--config <file>']],
    ['basebackup', ['--config <file>']],
    [
      'pitr restore',
      [
        '--data-dir <dir>',
        '--target-time <time>',
        '--target-lsn <lsn>',
        '--target-name <name>',
        '--latest',
        '--pause',
        '--start',
        '--port <port>',
        '--system-identifier <id>',
      ],
    ],
    ['pitr list', ['--json', '--system-identifier <id>']],
    ['pitr verify', ['--json', '--system-identifier <id>']],
    ['pitr drill', ['--json']],
    ['wal-fetch', ['--data-dir <dir>']],
  ])('`%s --help`: its own options, no setting flags, and where the settings are', async (cmd, own) => {
    const r = await runCli([...cmd.split(' '), '--help'], {});
    expect(r.code, r.out).toBe(EXIT.OK);
    for (const o of own) expect(r.out).toContain(o);
    expect(r.out).toMatch(POINTER);
    for (const name of FIELD_NAMES) expect(r.out).not.toContain(`${flagFor(name)} <value>`);
    expect(r.out.split('\n').length).toBeLessThan(30);
  });

  it('`pg-maintd help settings` lists every setting with its flag, under its group', async () => {
    const r = await runCli(['help', 'settings'], {});
    expect(r.code, r.out).toBe(EXIT.OK);
    const groups = [...new Set(FIELD_NAMES.map((n) => FIELDS[n].group))];
    for (const g of groups) expect(r.out).toMatch(new RegExp(`^${g}:$`, 'm'));
    for (const name of FIELD_NAMES) expect(r.out).toContain(`  ${name}, ${flagFor(name)} <value>`);
    expect(r.out).toContain(
      '  DB_POOL_MAX, --db-pool-max <value> (default: 20)\n      Most connections the pool opens.',
    );
    // in the order of the groups: a setting sits under its own group's heading
    const at = (s: string) => r.out.indexOf(s);
    expect(at('S3_BUCKET, ')).toBeGreaterThan(at('\nS3:'));
    expect(at('S3_BUCKET, ')).toBeLessThan(at('\nRetention:'));
  });

  it('`pg-maintd help settings | head -1`: a reader that stops early gets no stack trace', async () => {
    const r = spawnSync('sh', ['-c', `"${process.execPath}" bin/pg-maintd.js help settings | head -1`], {
      cwd: PACKAGE_ROOT,
      encoding: 'utf8',
    });
    expect(r.stdout.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).not.toMatch(/EPIPE|at .*\.js:\d+/);
  });

  it("`pg-maintd help migrate up` is that command's help; an unknown topic is a usage error", async () => {
    const r = await runCli(['help', 'migrate', 'up'], {});
    expect(r.code, r.out).toBe(EXIT.OK);
    expect(r.out).toMatch(/^Usage: pg-maintd migrate up \[options\]/);
    const bad = await runCli(['help', 'frobnicate'], {});
    expect(bad.code, bad.out).toBe(EXIT.USAGE);
    expect(bad.out).toMatch(
      /no help for "frobnicate": there is no such command\n {2}fix: run `pg-maintd help`/,
    );
  });

  it('`pg-maintd --help` points to the settings too', async () => {
    const r = await runCli(['--help'], {});
    expect(r.code, r.out).toBe(EXIT.OK);
    expect(r.out).toMatch(/`pg-maintd help settings` lists them/);
    expect(r.out).toMatch(/help \[topic\.\.\.\]/);
  });
});

describe('setting flags work on every command, listed or not', () => {
  // --db-pool-max 0 is refused by the configuration check: proof the flag reached it
  it.each([
    ['run'],
    ['check-config'],
    ['backup'],
    ['backups list'],
    ['restore --latest --target-url postgresql://u@db.internal/x'],
    ['retention'],
    ['verify'],
    ['migrate up'],
    ['migrate status'],
    ['migrate verify'],
    ['migrate baseline'],
    ['maintenance run'],
    ['doctor'],
  ])('`%s --db-pool-max 0`', async (cmd) => {
    const r = await runCli([...cmd.split(' '), '--db-pool-max', '0'], {
      DATABASE_URL: 'postgresql://pgmaintd@db.internal:5432/app',
    });
    expect(r.code, r.out).toBe(EXIT.CONFIG);
    expect(r.out).toContain(
      '  - DB_POOL_MAX (from flag --db-pool-max): got "0"; expected an integer from 1 to 1000',
    );
  });

  it('a mistyped setting flag still gets its "did you mean"', async () => {
    const r = await runCli(['backup', '--db-pool-maks', '3'], {});
    expect(r.code, r.out).toBe(EXIT.USAGE);
    expect(r.out).toMatch(/error: unknown option '--db-pool-maks'\n\(Did you mean --db-pool-max\?\)/);
  });
});
