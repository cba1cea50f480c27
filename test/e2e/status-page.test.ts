// The landing page and `pg-maintd status` against a real PostgreSQL, real backups and a real drill:
// the page loaded in a real headless Chromium (with and without JavaScript, with and without
// credentials), a hostile database name shown as text, a screenshot that shows something; the
// command's text, JSON and exit codes, with the database down, a backup overdue and the store unreadable.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import bcrypt from 'bcryptjs';
import pg from 'pg';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { humanBytes } from '../../src/core/units.js';
import { EXIT } from '../../src/core/exit-codes.js';
import { freePort } from '../../src/core/free-port.js';
import type { StatusSummary } from '../../src/status/summary.js';
import { CLI, cliEnv, runCli, startDaemon, waitFor } from '../support/daemon.js';
import { basicAuth } from '../support/http.js';
import { adminUrl } from '../support/postgres.js';
import { useTestDatabase } from '../support/postgres.js';
import { seed } from '../support/seed.js';

const db = useTestDatabase();
const r = randomBytes(3).toString('hex');
/** A database name that is markup: it must reach the page as text, never as an element. */
const HOSTILE = `<script>window.pwned=1</script><b>${r}`;
const USER = 'sre';
const PASSWORD = `pw-${randomBytes(6).toString('hex')}`;
const work = mkdtempSync(join(tmpdir(), 'pgmaintd-status-page-'));
const store = join(work, 'backups');
const configFile = join(work, 'config.json');
let env: Record<string, string>;
let daemon: Awaited<ReturnType<typeof startDaemon>>;
let browser: Browser;
let admin: pg.Client;

/** The next 03:00 UTC after now: where BACKUP_SCHEDULE '0 3 * * *' in UTC runs next. */
function nextThreeAm(now = Date.now()): string {
  const d = new Date(now);
  const at = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), 3);
  return new Date(at > now ? at : at + 86_400_000).toISOString();
}

/** A one-shot command with stdout and stderr apart (stdout must hold only the summary). */
function runSplit(args: string[], extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_FORMAT: 'json', ...env, ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
}

async function statusJson(): Promise<StatusSummary> {
  const res = await fetch(`${daemon.base}/status`, { headers: { authorization: basicAuth(USER, PASSWORD) } });
  expect(res.status).toBe(200);
  return (await res.json()) as StatusSummary;
}

/** The size of the one stored backup of `database`, as the store holds it. */
function storedSize(folder: string): number {
  const data = readdirSync(join(store, folder)).filter((f) => f.endsWith('.sql.gz'));
  expect(data).toHaveLength(1);
  return statSync(join(store, folder, data[0]!)).size;
}

/** Width, height and the number of distinct byte values of a PNG's pixel data (a flat image has few). */
function pngStats(png: Buffer): { width: number; height: number; distinct: number } {
  expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
  const idat: Buffer[] = [];
  let width = 0;
  let height = 0;
  for (let at = 8; at < png.length;) {
    const length = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
    } else if (type === 'IDAT') idat.push(data);
    at += 12 + length;
  }
  const pixels = inflateSync(Buffer.concat(idat));
  return { width, height, distinct: new Set(pixels).size };
}

beforeAll(async () => {
  await seed(db.pool, 60, 2);
  admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(HOSTILE)}`);
  const webConfig = join(work, 'web.json');
  writeFileSync(webConfig, JSON.stringify({ basic_auth_users: { [USER]: bcrypt.hashSync(PASSWORD, 10) } }));
  // a list in a config file takes any name, markup and all
  writeFileSync(configFile, JSON.stringify({ BACKUP_DATABASES: [db.name, HOSTILE] }));
  env = cliEnv(db.url, store, {
    CONFIG_FILE: configFile,
    WEB_CONFIG_FILE: webConfig,
    SCHEDULE_TZ: 'UTC',
    BACKUP_SCHEDULE: '0 3 * * *',
    BACKUP_VERIFY_SCHEDULE: '30 3 * * *',
    MAINTENANCE_SCHEDULE: '0 4 * * *',
  });
  // a real backup of both databases and a real drill of the first, then the daemon reads the store
  const backup = await runCli(['backup'], env);
  expect(backup.code, backup.out).toBe(EXIT.OK);
  const drill = await runCli(['verify', '--database', db.name], env);
  expect(drill.code, drill.out).toBe(EXIT.OK);
  daemon = await startDaemon(env);
  // the store is read and every collector polled once, in the background after start
  await waitFor(
    statusJson,
    (s) =>
      s.database.up === true &&
      s.backups.every((b) => b.listedAt !== null) &&
      (s.collectors ?? []).every((c) => c.ok !== null),
    30_000,
    250,
  );
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  if (daemon) {
    daemon.child.kill('SIGTERM');
    await daemon.exited;
  }
  await admin?.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(HOSTILE)} WITH (FORCE)`);
  await admin?.end();
  rmSync(work, { recursive: true, force: true });
});

describe('the landing page in a real browser', () => {
  it('shows the last backups, the drill, the next runs, the collectors and pg_up, with JavaScript off', async () => {
    const context = await browser.newContext({
      javaScriptEnabled: false,
      httpCredentials: { username: USER, password: PASSWORD },
    });
    try {
      const page = await context.newPage();
      const res = await page.goto(`${daemon.base}/`);
      expect(res?.status()).toBe(200);
      expect(res?.headers()['cache-control']).toBe('no-store');
      expect(res?.headers()['content-type']).toBe('text/html; charset=utf-8');
      expect(await page.title()).toBe('pg-maintd');
      for (const path of ['metrics', 'healthz', 'readyz'])
        expect(await page.locator(`a[href="${path}"]`).count()).toBe(1);

      expect(await page.locator('#database').innerText()).toContain('pg_up 1');
      const row = page.locator('#backups tbody tr', { hasText: db.name });
      const text = await row.innerText();
      expect(text).toContain(humanBytes(storedSize(db.name)));
      expect(text).toMatch(/\d+ s ago|\d+ min \d+ s ago/);
      expect(text).toContain('yes (drill passed');
      expect(text).toContain('within schedule');
      const hostileRow = await page.locator('#backups tbody tr', { hasText: HOSTILE }).innerText();
      expect(hostileRow).toContain('not yet (no restore drill of it)');

      const drill = await page.locator('#drills tbody tr', { hasText: db.name }).innerText();
      expect(drill).toContain('passed');
      const next = `${nextThreeAm().replace('T', ' ').slice(0, 19)} UTC`;
      for (const job of ['backup', 'retention'])
        expect(await page.locator('#jobs tbody tr', { hasText: job }).first().innerText()).toContain(next);
      expect(await page.locator('#jobs').innerText()).toMatch(/verify[\s\S]*03:30:00 UTC/);
      expect(await page.locator('#jobs').innerText()).toMatch(/maintenance[\s\S]*04:00:00 UTC/);

      const collectors = page.locator('#collectors tbody tr');
      expect(await collectors.count()).toBeGreaterThanOrEqual(8);
      for (const name of ['activity', 'locks', 'database', 'settings'])
        expect(await page.locator('#collectors tbody tr', { hasText: name }).first().innerText()).toMatch(
          /\bok\b/,
        );
      expect(await page.locator('#problems').innerText()).toContain('No problem found');
    } finally {
      await context.close();
    }
  });

  it('renders a hostile database name as text, never as markup or script', async () => {
    const context = await browser.newContext({ httpCredentials: { username: USER, password: PASSWORD } });
    try {
      const page = await context.newPage();
      await page.goto(`${daemon.base}/`);
      expect(await page.locator('#backups').innerText()).toContain(HOSTILE);
      expect(await page.locator('script').count()).toBe(0);
      expect(await page.locator('#backups b').count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as { pwned?: number }).pwned)).toBeUndefined();
      const html = await (
        await fetch(`${daemon.base}/`, { headers: { authorization: basicAuth(USER, PASSWORD) } })
      ).text();
      expect(html).not.toContain('<script>');
      expect(html).toContain('&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;b&gt;');
    } finally {
      await context.close();
    }
  });

  it('asks for the same credentials as /metrics', async () => {
    // what the browser received for `/` (Chromium may turn a refused challenge into a navigation error)
    const answer = async (context: BrowserContext) => {
      const page = await context.newPage();
      const seen = page.waitForResponse((r) => r.url() === `${daemon.base}/`);
      await page.goto(`${daemon.base}/`).catch(() => undefined);
      const res = await seen;
      return { status: res.status(), body: await res.text() };
    };
    const anonymous = await browser.newContext();
    const wrong = await browser.newContext({ httpCredentials: { username: USER, password: 'wrong' } });
    const right = await browser.newContext({ httpCredentials: { username: USER, password: PASSWORD } });
    try {
      for (const context of [anonymous, wrong]) {
        const a = await answer(context);
        expect(a.status).toBe(401);
        expect(a.body).not.toContain(db.name);
      }
      const ok = await answer(right);
      expect(ok.status).toBe(200);
      expect(ok.body).toContain(db.name);
      for (const path of ['/status', '/?format=json', '/metrics'])
        expect((await fetch(`${daemon.base}${path}`)).status, path).toBe(401);
    } finally {
      for (const c of [anonymous, wrong, right]) await c.close();
    }
  });

  it('takes a screenshot that shows the page, not a blank', async () => {
    const context = await browser.newContext({
      javaScriptEnabled: false,
      httpCredentials: { username: USER, password: PASSWORD },
      viewport: { width: 1200, height: 900 },
    });
    const shot = join(work, 'status-page.png');
    const blankShot = join(work, 'blank.png');
    try {
      const page = await context.newPage();
      await page.goto('about:blank');
      await page.screenshot({ path: blankShot });
      await page.goto(`${daemon.base}/`);
      await page.screenshot({ path: shot, fullPage: true });
      const stats = pngStats(readFileSync(shot));
      const blank = pngStats(readFileSync(blankShot));
      expect(stats.width).toBe(1200);
      expect(stats.height).toBeGreaterThanOrEqual(900);
      expect(blank.distinct).toBeLessThan(10); // a flat page: few values
      expect(stats.distinct).toBeGreaterThan(100); // text, tables and colours
      expect(statSync(shot).size).toBeGreaterThan(10 * statSync(blankShot).size);
    } finally {
      await context.close();
      rmSync(shot, { force: true });
      rmSync(blankShot, { force: true });
    }
  });
});

describe('pg-maintd status', () => {
  it('prints the same summary, exit 0 when the database is up and every backup is within schedule', async () => {
    const { code, stdout, stderr } = await runSplit(['status']);
    expect(code, stderr).toBe(EXIT.OK);
    expect(stdout).toContain('pg_up 1');
    const row = stdout.split('\n').find((l) => l.startsWith(db.name))!;
    expect(row).toContain(humanBytes(storedSize(db.name)));
    expect(row).toContain('yes (drill passed');
    expect(row).toContain('within schedule');
    expect(stdout).toContain(HOSTILE);
    expect(stdout).toContain(`${nextThreeAm().replace('T', ' ').slice(0, 19)} UTC`);
    expect(stdout).toMatch(/^stat_activity\s+ok\b/m);
    expect(stdout).toContain('No problem found');
  });

  it('--json has the shape of /status and agrees with the daemon', async () => {
    const { code, stdout, stderr } = await runSplit(['status', '--json']);
    expect(code, stderr).toBe(EXIT.OK);
    const s = JSON.parse(stdout) as StatusSummary & { exitCode: number };
    const fromDaemon = await statusJson();
    expect(s.exitCode).toBe(0);
    expect(s.source).toBe('command');
    expect(fromDaemon.source).toBe('daemon');
    expect(Object.keys(s).sort()).toEqual([...Object.keys(fromDaemon), 'exitCode'].sort());
    expect(s.database.up).toBe(true);
    expect(s.problems).toEqual([]);
    expect(s.backups.map((b) => b.database)).toEqual([db.name, HOSTILE]);
    const [mine, hostile] = s.backups;
    expect(mine!.newest!.sizeBytes).toBe(storedSize(db.name));
    expect(mine!.verified).toBe(true);
    expect(mine!.lastDrill).toMatchObject({ result: 'ok', key: mine!.newest!.key });
    expect(mine!.overdue).toBe(false);
    expect(hostile!.verified).toBe(false);
    expect(hostile!.newest!.drill).toBeNull();
    // the command's look and the daemon's memory see the same backups and the same next runs
    expect(s.backups.map((b) => b.newest?.key)).toEqual(fromDaemon.backups.map((b) => b.newest?.key));
    expect(s.jobs).toEqual(
      fromDaemon.jobs.map((j) => ({ ...j, inSeconds: expect.any(Number) as unknown as number })),
    );
    expect(s.jobs.find((j) => j.job === 'backup')!.next).toBe(nextThreeAm());
    expect(s.collectors!.length).toBe(fromDaemon.collectors!.length);
    expect(s.collectors!.every((c) => c.ok === true && c.durationSeconds !== null)).toBe(true);
  });

  it('with the database down: pg_up 0, exit 69, what to do, and the backups still shown', async () => {
    const u = new URL(db.url);
    u.password = '';
    u.port = String(await freePort());
    const { code, stdout, stderr } = await runSplit(['status', '--json'], { DATABASE_URL: u.toString() });
    expect(code).toBe(EXIT.UNAVAILABLE);
    expect(stderr).toMatch(/pg_up is 0: the database at .* cannot be reached/);
    expect(stderr).toContain('fix: check that PostgreSQL is running');
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
    const s = JSON.parse(stdout) as StatusSummary & { exitCode: number };
    expect(s.exitCode).toBe(EXIT.UNAVAILABLE);
    expect(s.database.up).toBe(false);
    expect(s.collectors).toBeNull();
    expect(s.problems.map((p) => p.kind)).toEqual(['database_down']);
    expect(s.backups[0]!.newest!.sizeBytes).toBe(storedSize(db.name));
    const text = await runSplit(['status'], { DATABASE_URL: u.toString() });
    expect(text.code).toBe(EXIT.UNAVAILABLE);
    expect(text.stdout).toContain('pg_up 0');
    expect(text.stdout).toContain('not polled: the database cannot be reached');
  });

  it('exit 1 when the newest backup is older than BACKUP_SCHEDULE allows', async () => {
    // every second: the backup taken before the tests is long overdue by that schedule
    const r = await waitFor(
      () => runSplit(['status'], { BACKUP_SCHEDULE: '* * * * * *' }),
      (x) => x.code !== EXIT.OK,
      30_000,
      500,
    );
    expect(r.code, r.stderr).toBe(EXIT.FAILURE);
    expect(r.stderr).toContain(`the newest good backup of ${JSON.stringify(db.name)} finished`);
    expect(r.stderr).toContain('older than BACKUP_SCHEDULE (* * * * * *) allows');
    expect(r.stderr).toContain('fix: check the daemon log for failed or skipped backups');
    expect(r.stdout).toContain('OVERDUE since');
  });

  it('exit 69 when the store cannot be listed, with pg_up and the collectors still shown', async () => {
    const notADir = join(work, 'not-a-directory');
    writeFileSync(notADir, 'x');
    const { code, stdout, stderr } = await runSplit(['status'], { BACKUP_DIR: notADir });
    expect(code).toBe(EXIT.UNAVAILABLE);
    expect(stderr).toContain('cannot be listed');
    expect(stderr).toContain('fix: check BACKUP_DIR');
    expect(stderr).not.toMatch(/\n\s+at /);
    expect(stdout).toContain('pg_up 1');
    expect(stdout).toContain('store unreadable');
    expect(stdout).toMatch(/^stat_activity\s+ok\b/m);
  });
});
