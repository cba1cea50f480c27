/**
 * The pool factory: pg.Pool with the DB_POOL_* settings, the DB_SSL_* transport, per-connection
 * timeouts and an application_name, and the allow/prefer fallback libpq performs.
 */
import pg from 'pg';
import type { Logger } from '../log/logger.js';
import { Service } from '../lifecycle/service.js';
import { defaultUser, findPassword, MissingPasswordError } from './password.js';
import { classify } from './sqlstate.js';
import {
  isPlaintextRejected,
  isTlsUnsupported,
  planTransport,
  type TlsSettings,
  type Transport,
} from './tls.js';
import { describeTarget, parseDatabaseUrl, type ConnectionTarget } from '../core/database-url.js';
import { currentUrl } from './url-file.js';

export interface PoolSettings {
  url: string;
  /** DATABASE_URL_FILE: re-read when it changes; new connections go to the URL it holds then. */
  urlFile?: string | undefined;
  ssl: TlsSettings;
  pool: { min: number; max: number; idleTimeoutMs: number; acquireTimeoutMs: number };
}

export interface PoolOptions {
  /** Names the pool in logs and metrics, e.g. "main", "readyz". */
  name: string;
  /** Connect to this database instead of the one in the URL. */
  database?: string;
  applicationName?: string;
  /** Overrides of the configured pool size and timeouts, for small purpose-built pools. */
  max?: number;
  min?: number;
  acquireTimeoutMs?: number;
  /** statement_timeout of every session (0: none, whatever the role or database sets). */
  statementTimeoutMs?: number;
  /** lock_timeout of every session (0: none, whatever the role or database sets). */
  lockTimeoutMs?: number;
  /** Client-side limit per query: also ends a query whose server has gone silent (no RST, no answer). */
  queryTimeoutMs?: number;
  /** libpq-style startup options (`-c name=value ...`): settings no role or database default overrides. */
  options?: string;
  /** No startup options at all (the pooler probe: PgBouncer refuses them). */
  bare?: boolean;
  logger: Logger;
}

export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
}

export class DbPool extends Service {
  readonly name: string;
  // where connections go and how: set by #useUrl (from the constructor, and on a URL file change)
  #target!: ConnectionTarget;
  #verified!: boolean;
  #url!: string;
  #pool: pg.Pool;
  #transport!: Transport;
  #fallback: Transport | undefined;
  /** Counts changes of the transport (and of the target): a call that failed on an older one retries. */
  #switches = 0;
  readonly #settings: PoolSettings;
  readonly #opts: PoolOptions;
  #log!: Logger;
  /** Where the password of the newest connection came from: named when the server refuses it. */
  #passwordSource: string | undefined;
  readonly #retiring = new Set<Promise<void>>();

  constructor(settings: PoolSettings, opts: PoolOptions) {
    super();
    this.name = `pool:${opts.name}`;
    this.#settings = settings;
    this.#opts = opts;
    this.#useUrl(currentUrl(settings).url);
    this.#pool = this.#build();
    // The pool exists from construction (connections open lazily), so it counts as started:
    // stop() must end it even when nobody called start().
    void this.start();
  }

  /** Where connections go now (DATABASE_URL_FILE can move it). */
  get target(): ConnectionTarget {
    this.#followUrlFile();
    return this.#target;
  }

  /** Whether the server's certificate is verified (chain, and host name in verify-full). */
  get verified(): boolean {
    return this.#verified;
  }

  /** user@host:port/db, for messages. */
  get description(): string {
    return describeTarget(this.#target);
  }

  stats(): PoolStats {
    return { total: this.#pool.totalCount, idle: this.#pool.idleCount, waiting: this.#pool.waitingCount };
  }

  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string | pg.QueryConfig,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    this.#followUrlFile();
    return this.#withFallback(() => this.#pool.query<R>(text as string, values));
  }

  /** A client for a session of several statements; the caller must release() it. */
  async connect(): Promise<pg.PoolClient> {
    this.#followUrlFile();
    const client = await this.#withFallback(() => this.#pool.connect());
    // pg-pool stops listening for errors on a client while it is checked out; a connection that
    // dies then (server restart, failover) must not become an uncaught 'error' event.
    const onError = (err: Error) => {
      const { kind, code } = classify(err);
      this.#log.warn({ err: { message: err.message, code }, kind }, 'database connection in use failed');
    };
    client.on('error', onError);
    const release = client.release.bind(client);
    client.release = (destroy?: boolean | Error) => {
      client.off('error', onError);
      return release(destroy);
    };
    return client;
  }

  protected async onStart(): Promise<void> {
    // Nothing to open: connections open on first use.
  }

  protected async onStop(): Promise<void> {
    await Promise.allSettled([this.#pool.end(), ...this.#retiring]);
  }

  /** Where connections go, and how: the target, its transport plan, a logger that names it. */
  #useUrl(url: string) {
    const database = this.#opts.database;
    this.#url = url;
    this.#target = { ...parseDatabaseUrl(url), ...(database ? { database } : {}) };
    const plan = planTransport(this.#settings.ssl, this.#target.host);
    this.#verified = plan.verified;
    this.#transport = plan.first;
    this.#fallback = plan.fallback;
    this.#switches++;
    this.#log = this.#opts.logger.child({ pool: this.#opts.name, db: describeTarget(this.#target) });
  }

  /**
   * DATABASE_URL_FILE changed: new connections go to the new target; the old pool ends once the
   * connections in use come back (a failed-over primary's connections fail on their own).
   */
  #followUrlFile() {
    if (!this.#settings.urlFile || this.stopping) return;
    const { url, problem } = currentUrl(this.#settings);
    if (problem)
      this.#log.error(
        { file: this.#settings.urlFile },
        `DATABASE_URL_FILE changed but cannot be used (${problem}); connections keep going to ${this.description}: fix the file`,
      );
    if (url === this.#url) return;
    const from = this.description;
    this.#useUrl(url); // readUrlFile parsed it already: it cannot throw
    this.#log.info(
      { from, to: this.description },
      'DATABASE_URL_FILE changed: new connections go to the new target',
    );
    const old = this.#pool;
    this.#pool = this.#build();
    this.#retire(old);
  }

  async #withFallback<T>(op: () => Promise<T>): Promise<T> {
    const tried = this.#transport;
    const switches = this.#switches;
    try {
      return await this.#attempt(op);
    } catch (err) {
      if (this.#fallback === undefined || !refusedFor(tried, err)) throw err;
      // Concurrent first calls all fail on the first transport: the first one to come back switches,
      // the others only retry on the transport it switched to (switching again would undo it).
      if (this.#switches === switches) {
        // expected with DB_SSL_MODE unset and a local server without TLS: the start-up notice said so
        const level = this.#settings.ssl.modeDefaulted ? 'debug' : 'info';
        this.#log[level](
          { from: this.#transport ? 'tls' : 'plaintext', to: this.#fallback ? 'tls' : 'plaintext' },
          'server refused the first transport; trying the other, as DB_SSL_MODE allows',
        );
        this.#swapTransport();
      }
      return this.#attempt(op);
    }
  }

  /** One try of `op`; a refused password is marked with where it came from, for the message. */
  async #attempt<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if ((err as { code?: string })?.code === '28P01' && this.#passwordSource)
        Object.assign(err as object, { passwordSource: this.#passwordSource });
      throw err;
    }
  }

  #swapTransport() {
    this.#switches++;
    const current = this.#transport;
    this.#transport = this.#fallback as Transport;
    this.#fallback = current; // a later refusal (say, after a failover) can swap back
    this.#retire(this.#pool);
    this.#pool = this.#build();
  }

  /**
   * Ends a pool that new requests no longer reach, once the requests queued on it are served
   * (pg-pool serves no queue once ending) and its connections in use come back.
   */
  #retire(old: pg.Pool) {
    const done = (async () => {
      while (old.waitingCount > 0 && !this.stopping) await new Promise((r) => setTimeout(r, 50).unref());
      await old.end().catch(() => undefined);
    })();
    this.#retiring.add(done);
    void done.finally(() => this.#retiring.delete(done));
  }

  /** The URL's password, PGPASSWORD or the passfile's, or an error that says how to give one. */
  #password(target: ConnectionTarget, client: unknown): string {
    const found = findPassword(target);
    if (!('password' in found)) {
      // pg reports the error but leaves the socket open, and the server waits for the password
      // until authentication_timeout (a minute): close it once the error has been reported
      const stream = (client as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
      setImmediate(() => stream?.destroy());
      throw new MissingPasswordError(found.problem);
    }
    this.#passwordSource = found.source;
    return found.password;
  }

  #build(): pg.Pool {
    const { pool } = this.#settings;
    const o = this.#opts;
    const target = this.#target;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- pg binds `this` to the client
    const self = this;
    const p = new pg.Pool({
      host: target.host,
      port: target.port,
      // named even when the URL names none: the passfile line looked up is for this user
      user: target.user ?? defaultUser(),
      // asked for only when the server wants one (trust and peer authentication need none); pg
      // calls it as a method of the client that connects
      password: function (this: unknown) {
        return self.#password(target, this);
      },
      database: target.database,
      ssl: this.#transport,
      application_name: o.applicationName ?? 'pg-maintd',
      max: o.max ?? pool.max,
      min: Math.min(o.min ?? pool.min, o.max ?? pool.max),
      idleTimeoutMillis: pool.idleTimeoutMs,
      connectionTimeoutMillis: o.acquireTimeoutMs ?? pool.acquireTimeoutMs,
      query_timeout: o.queryTimeoutMs,
      // set at connection, before any query: no role or database default, and nothing another role
      // puts on the search_path, changes what pg-maintd's own SQL does
      ...(o.bare ? {} : { options: [sessionOptions(o), o.options].filter(Boolean).join(' ') }),
      keepAlive: true,
    });
    // An idle client's socket error must never crash the process: log it; the pool drops the client.
    p.on('error', (err) => {
      const { kind, code } = classify(err);
      this.#log.warn({ err: { message: err.message, code }, kind }, 'idle database connection failed');
    });
    return p;
  }
}

/** The server refused `transport` for the reason that trying the other one addresses. */
function refusedFor(transport: Transport, err: unknown): boolean {
  return transport === false ? isPlaintextRejected(err) : isTlsUnsupported(err);
}

/**
 * The settings of every session pg-maintd opens, as startup options. search_path is pg_catalog alone:
 * PostgreSQL picks the best-matching function or operator among every schema on the path, so a
 * `format(text, name, name)` another role put in public would win over pg_catalog's and run with
 * pg-maintd's privileges; with pg_catalog alone, pg-maintd's own SQL names other schemas explicitly.
 * Timeouts and read-only defaults of the role or database do not apply: each pool states its own
 * (settings every supported server knows; a long-lived session sets the newer ones itself).
 */
export function sessionOptions(o: { statementTimeoutMs?: number; lockTimeoutMs?: number }): string {
  const settings: Array<[string, string]> = [
    ['search_path', 'pg_catalog'],
    ['default_transaction_read_only', 'off'],
    ['idle_in_transaction_session_timeout', '0'],
  ];
  if (o.statementTimeoutMs !== undefined)
    settings.push(['statement_timeout', String(Math.round(o.statementTimeoutMs))]);
  if (o.lockTimeoutMs !== undefined) settings.push(['lock_timeout', String(Math.round(o.lockTimeoutMs))]);
  return settings.map(([n, v]) => `-c ${n}=${v}`).join(' ');
}
