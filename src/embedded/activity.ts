/**
 * Demo traffic: the seed's queries (a user's projects a page at a time, full-text search, a project's
 * pending tasks) every few hundred milliseconds, and now and then a lock wait: one session holds a
 * project row in an open transaction while another tries to update it, so the lock metrics and the
 * lock-wait log line have something to show. Sessions are called "demo-app", not "pg-maintd".
 */
import pg from 'pg';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { errorMessage } from '../core/errors.js';

export class DemoActivity extends Service {
  readonly name = 'demo-activity';
  readonly #clients: pg.Client[] = [];
  /** The pending timer of each loop, replaced at every tick (one per loop, not one per tick). */
  readonly #timers = new Map<() => Promise<void>, NodeJS.Timeout>();

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
    private readonly opts: { lockHoldMs: number; lockEveryMs: number },
  ) {
    super();
  }

  protected async onStart(): Promise<void> {
    const [reader, holder, waiter] = await Promise.all([this.#client(), this.#client(), this.#client()]);
    const queries = [
      'SELECT id, name FROM projects WHERE user_id = (SELECT id FROM users ORDER BY random() LIMIT 1) ORDER BY created_at DESC LIMIT 20',
      "SELECT id, name FROM projects WHERE to_tsvector('english', name) @@ plainto_tsquery('english', 'report')",
      "SELECT id, title FROM tasks WHERE to_tsvector('english', title || ' ' || COALESCE(description, '')) @@ plainto_tsquery('english', 'design')",
      "SELECT id, title FROM tasks WHERE project_id = (SELECT id FROM projects ORDER BY random() LIMIT 1) AND status = 'pending' ORDER BY created_at",
    ];
    let i = 0;
    this.#every(300, async () => {
      await reader!.query(queries[i++ % queries.length]!);
    });
    const lockWait = async () => {
      const row = await holder!.query<{ id: string }>('SELECT id FROM projects ORDER BY id LIMIT 1');
      const id = row.rows[0]!.id;
      await holder!.query('BEGIN');
      await holder!.query("UPDATE projects SET status = 'active' WHERE id = $1", [id]);
      // handled at once: the wait may still be pending when the demo stops and ends the connection
      const blocked = waiter!
        .query("UPDATE projects SET description = 'edited' WHERE id = $1", [id])
        .catch(() => undefined);
      await new Promise((r) => setTimeout(r, this.opts.lockHoldMs));
      await holder!.query('COMMIT');
      await blocked;
    };
    this.#every(this.opts.lockEveryMs, lockWait, 2000);
  }

  protected async onStop(): Promise<void> {
    for (const t of this.#timers.values()) clearTimeout(t);
    await Promise.allSettled(this.#clients.map((c) => c.end()));
  }

  async #client(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: this.url, application_name: 'demo-app' });
    c.on('error', () => undefined); // the cluster stopping under us at shutdown
    await c.connect();
    this.#clients.push(c);
    return c;
  }

  #every(ms: number, fn: () => Promise<void>, firstMs = ms) {
    const tick = () => {
      if (this.stopping) return;
      fn()
        .catch((err: unknown) => {
          if (!this.stopping) this.logger.debug({ err: { message: errorMessage(err) } }, 'demo activity');
        })
        .finally(() => {
          if (!this.stopping) this.#timers.set(fn, setTimeout(tick, ms));
        });
    };
    this.#timers.set(fn, setTimeout(tick, firstMs));
  }
}
