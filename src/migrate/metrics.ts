/**
 * The start-up migrations' state as metrics: how many are pending, and whether the bootstrap is
 * blocked (waiting and retrying: a lock, another session, the database), has failed (waiting for
 * someone to act), or skipped a database that is not its to build in (by design, not an alert),
 * each with its reason. Every reason is exported, 0 or 1, so an alert can tell
 * "not blocked" from "not reported".
 */
import { Gauge, type Registry } from 'prom-client';
import {
  BLOCKED_REASONS,
  FAILED_REASONS,
  SKIPPED_REASONS,
  type BlockedReason,
  type FailedReason,
  type SkippedReason,
} from './migration-error.js';

export class MigrationMetrics {
  readonly #pending: Gauge;
  readonly #registry: Registry;
  readonly #blocked: Gauge<'reason'>;
  readonly #failed: Gauge<'reason'>;
  readonly #skipped: Gauge<'reason'>;

  constructor(registry: Registry) {
    this.#registry = registry;
    // registered once known: until the database was read, no sample rather than a misleading 0
    this.#pending = new Gauge({
      name: 'pgmaintd_migrations_pending',
      help: 'Schema migrations of MIGRATIONS_DIR not applied yet (absent until the database was read).',
      registers: [],
    });
    this.#blocked = new Gauge({
      name: 'pgmaintd_migrations_blocked',
      help: `1 while the start-up migrations wait and retry, by reason (${BLOCKED_REASONS.join(', ')}).`,
      labelNames: ['reason'],
      registers: [registry],
    });
    this.#failed = new Gauge({
      name: 'pgmaintd_migrations_failed',
      help: `1 while the start-up migrations have stopped on a fault retrying cannot fix, by reason (${FAILED_REASONS.join(', ')}).`,
      labelNames: ['reason'],
      registers: [registry],
    });
    this.#skipped = new Gauge({
      name: 'pgmaintd_migrations_skipped',
      help: `1 while the start-up migrations leave the database alone by design, by reason (${SKIPPED_REASONS.join(', ')}: objects of its own and no migration history; \`migrate up\` or \`migrate baseline\` adopts it).`,
      labelNames: ['reason'],
      registers: [registry],
    });
    this.setBlocked(undefined);
    this.setFailed(undefined);
    this.setSkipped(undefined);
  }

  setPending(n: number): void {
    if (!this.#registry.getSingleMetric('pgmaintd_migrations_pending'))
      this.#registry.registerMetric(this.#pending);
    this.#pending.set(n);
  }

  setBlocked(reason: BlockedReason | undefined): void {
    for (const r of BLOCKED_REASONS) this.#blocked.set({ reason: r }, r === reason ? 1 : 0);
  }

  setFailed(reason: FailedReason | undefined): void {
    for (const r of FAILED_REASONS) this.#failed.set({ reason: r }, r === reason ? 1 : 0);
  }

  setSkipped(reason: SkippedReason | undefined): void {
    for (const r of SKIPPED_REASONS) this.#skipped.set({ reason: r }, r === reason ? 1 : 0);
  }
}
