/**
 * pg_static{version,short_version} (untyped, as the reference has it) and
 * pg_postmaster_start_time_seconds, under the reference's collector name "postmaster".
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = `
  SELECT version() AS version,
         current_setting('server_version') AS short,
         extract(epoch FROM pg_postmaster_start_time()) AS started`;

/** "15.18 (Debian 15.18-0+deb12u1)" -> "15.18.0"; "17.2" -> "17.2.0"; "18beta1" -> "18.0.0" */
export function shortVersion(serverVersion: string): string {
  const [major = '0', minor = '0', patch = '0'] = (
    /^\d+(?:\.\d+){0,2}/.exec(serverVersion)?.[0] ?? '0'
  ).split('.');
  return `${major}.${minor}.${patch}`;
}

export class PostmasterCollector implements Collector {
  readonly name = 'postmaster';
  readonly #static: CachedFamily<'version' | 'short_version'>;
  readonly #started: CachedFamily;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#static = new CachedFamily(registry, {
      name: 'pg_static',
      help: 'Version string as reported by postgres',
      type: 'untyped',
      labelNames: ['version', 'short_version'],
    });
    this.#started = new CachedFamily(registry, {
      name: 'pg_postmaster_start_time_seconds',
      help: 'Time at which postmaster started',
      type: 'gauge',
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const r = await client.query<{ version: string; short: string; started: string }>(SQL);
    const row = r.rows[0]!;
    this.#static.replace([
      { labels: { version: row.version, short_version: shortVersion(row.short) }, value: 1 },
    ]);
    this.#started.replace([{ labels: {}, value: Number(row.started) }]);
  }

  clear(): void {
    this.#static.clear();
    this.#started.clear();
  }
}
