/**
 * MIGRATE_ON_START: the daemon applies pending migrations before it starts its jobs. A database
 * that cannot be reached yet is waited for (HTTP is already up, so probes answer meanwhile); a
 * migration that cannot be applied (a changed file, a schema without history, a failing statement)
 * stops the start-up with the runner's message and fix.
 */
import { classify } from '../db/sqlstate.js';
import { describeTarget, parseDatabaseUrl } from '../db/url.js';
import { EXIT } from '../exit-codes.js';
import { OperatorError, unavailableError } from '../errors.js';
import { Service } from '../lifecycle/service.js';
import type { Logger } from '../log/logger.js';
import { migrateUp, type MigrateOptions } from './runner.js';

const RETRY_MS = 5000;

export class MigrationBootstrap extends Service {
  readonly name = 'migrations';
  readonly #abort = new AbortController();

  constructor(
    private readonly o: Omit<MigrateOptions, 'signal'>,
    private readonly logger: Logger,
  ) {
    super();
  }

  protected async onStart(): Promise<void> {
    let waiting = false;
    for (;;) {
      try {
        const r = await migrateUp({ ...this.o, signal: this.#abort.signal });
        this.logger.info(
          { applied: r.applied.map((a) => a.file), repaired: r.repaired },
          r.applied.length ? 'migrations applied' : 'schema is up to date',
        );
        return;
      } catch (err) {
        if (this.#abort.signal.aborted) {
          if (!waiting)
            this.logger.warn(
              { err: { message: (err as Error).message } },
              'start-up migrations stopped by the shutdown: a migration in flight was rolled back and not recorded; the next start applies it',
            );
          return;
        }
        if (err instanceof OperatorError) throw err;
        const { kind, code, retryable } = classify(err);
        if (kind === 'permission_denied')
          throw new OperatorError(
            `the role of DATABASE_URL may not apply the schema migrations (MIGRATE_ON_START): ${(err as Error).message}`,
            {
              exitCode: EXIT.DATAERR,
              hint: 'apply them as the schema owner (`pg-maintd migrate up` with its URL) and set MIGRATE_ON_START=false for a monitoring-only role, or grant this role CREATE on the schema',
              cause: err,
            },
          );
        // the project's retry policy (db/sqlstate.ts): an outage is waited for; a wrong password or
        // database name is not, and stops the start with what to fix (exit 69)
        if (!retryable) throw unavailableError(err, describeTarget(parseDatabaseUrl(this.o.db.url))) ?? err;
        if (!waiting)
          this.logger.warn(
            { kind, code, err: { message: (err as Error).message } },
            `database unreachable: migrations (MIGRATE_ON_START) retry every ${RETRY_MS / 1000} s; jobs start after them`,
          );
        waiting = true;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, RETRY_MS);
          this.#abort.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), {
            once: true,
          });
        });
        if (this.#abort.signal.aborted) return;
      }
    }
  }

  protected override interruptStart(): void {
    this.#abort.abort(new Error('pg-maintd is shutting down'));
  }

  protected async onStop(): Promise<void> {
    // nothing held once start() has ended: Service.stop() has already interrupted a pending start
  }
}
