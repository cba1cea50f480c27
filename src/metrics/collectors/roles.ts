/**
 * pg_roles_connection_limit{rolname} (-1: no limit), as postgres_exporter's "roles" collector exports
 * it (collector/pg_roles.go): one series per role, predefined roles included, as the reference has them.
 */
import type { Registry } from 'prom-client';
import type { Collector, CollectorContext } from '../collector.js';
import { CachedFamily } from '../family.js';

const SQL = 'SELECT rolname, rolconnlimit FROM pg_roles';

export class RolesCollector implements Collector {
  readonly name = 'roles';
  readonly #limit: CachedFamily<'rolname'>;

  constructor(
    registry: Registry,
    readonly intervalMs?: number,
  ) {
    this.#limit = new CachedFamily(registry, {
      name: 'pg_roles_connection_limit',
      help: 'Connection limit set for the role',
      type: 'gauge',
      labelNames: ['rolname'],
    });
  }

  async collect({ client }: CollectorContext): Promise<void> {
    const rows = (await client.query<{ rolname: string | null; rolconnlimit: number | null }>(SQL)).rows;
    this.#limit.replace(
      rows
        .filter((r) => r.rolname !== null && r.rolconnlimit !== null)
        .map((r) => ({ labels: { rolname: r.rolname! }, value: r.rolconnlimit! })),
    );
  }

  clear(): void {
    this.#limit.clear();
  }
}
