/**
 * The HTTP server: /metrics (Prometheus text), /healthz (liveness), /readyz (readiness), and the
 * status summary at / (HTML) and /status (JSON).
 */
import { STATUS_CODES } from 'node:http';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from '../log/logger.js';
import { Service } from '../lifecycle/service.js';
import { Exposition } from '../metrics/exposition.js';
import type { LivenessCheck } from '../health/watchdog.js';
import type { ReadinessState } from '../health/readiness.js';
import type { StatusSummary } from '../status/summary.js';
import { chooseCoding } from './accept-encoding.js';
import { Authenticator, type AuthResult } from './auth.js';
import { renderLandingPage } from './landing-page.js';
import { limitConnectionsPerClient } from './connection-limit.js';
import { LogThrottle } from './log-throttle.js';
import type { WebFiles, WebSettings } from './web-config.js';
import { clientCertOptions, clientCertRejection, secureContextOptions } from './web-tls.js';
import { WebSettingsWatcher } from './web-watch.js';

/** Kubernetes probes: open whatever authentication is configured. */
const OPEN_ROUTES = new Set(['/healthz', '/readyz']);
/**
 * A client has this long to send its request headers (and to finish a TLS handshake), and the
 * whole request: a slowloris holds a socket for seconds, not Node's minutes. The probes and a
 * scrape send a few hundred bytes at once.
 */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;
/** How often Node looks for connections past those limits (its default, 30 s, would let them run on). */
const TIMEOUT_CHECK_MS = 1000;
/**
 * A connection that sends nothing at all (Node's headers timeout starts at the first byte), or a
 * client that stops reading its answer, is closed after this long idle. Between requests of a
 * keep-alive connection, Fastify's keepAliveTimeout (72 s) applies instead.
 */
const IDLE_TIMEOUT_MS = 10_000;
const MAX_CONNECTIONS_PER_CLIENT = 32;
/** No route takes a body. */
const BODY_LIMIT = 4096;

export interface HttpDeps {
  host: string;
  port: number;
  registry: Registry;
  logger: Logger;
  liveness: Record<string, () => LivenessCheck>;
  readiness: () => ReadinessState;
  /** The status summary for `/` and `/status`, built from memory (never a query per request). */
  status?: () => StatusSummary;
  /** WEB_CONFIG_FILE and WEB_BEARER_TOKEN_FILE: TLS, headers and credentials, re-read on change. */
  web?: WebFiles;
}

export class HttpServer extends Service {
  readonly name = 'http-server';
  readonly app: FastifyInstance;
  readonly #log: Logger;
  #address: { host: string; port: number } | undefined;
  #web: WebSettingsWatcher | undefined;
  #auth: Authenticator;
  #denials = new LogThrottle();
  #notFound = new LogThrottle();
  #refused = new LogThrottle();

  /** Throws WebConfigError (exit 78) when the web config or token file is invalid. */
  constructor(private readonly deps: HttpDeps) {
    super();
    const log = (this.#log = deps.logger.child({ component: 'http' }));
    this.#auth = new Authenticator((err) =>
      log.error({ err: { message: err.message } }, 'bcrypt worker failed: its checks were denied'),
    );
    if (deps.web?.configFile || deps.web?.bearerTokenFile) {
      this.#web = new WebSettingsWatcher(deps.web, log, (next) => this.#apply(next));
    }
    const tls = this.#web?.current.tls;
    const timeouts = { headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_MS };
    this.app = Fastify({
      loggerInstance: log as FastifyBaseLogger,
      // one line per request would let any client write the log; what is worth saying is said below
      logController: new LogController({ disableRequestLogging: true }),
      // req.log is the server's logger itself: a child per request (pino redacts its bindings) cost
      // a tenth of a scrape, for a request id that no log line needs without request logging
      childLoggerFactory: (logger) => logger,
      forceCloseConnections: true,
      return503OnClosing: true,
      bodyLimit: BODY_LIMIT,
      requestTimeout: REQUEST_TIMEOUT_MS,
      connectionTimeout: IDLE_TIMEOUT_MS,
      ...(tls
        ? {
            https: {
              ...secureContextOptions(tls),
              ...clientCertOptions(tls),
              ...timeouts,
              handshakeTimeout: HEADERS_TIMEOUT_MS,
            },
          }
        : { http: timeouts }),
    }) as unknown as FastifyInstance;
    limitConnectionsPerClient(this.app.server, MAX_CONNECTIONS_PER_CLIENT, (remoteAddress) => {
      log.debug({ remoteAddress }, 'connection refused: too many open from this client');
      const count = this.#refused.hit();
      if (count !== undefined)
        log.warn(
          { remoteAddress, count, limit: MAX_CONNECTIONS_PER_CLIENT },
          'connections refused: too many open from one client; this warning repeats at most once a minute',
        );
    });
    if (this.#web) {
      this.#auth.update(this.#web.current);
      if (tls) this.#enforceClientCerts(log);
      this.app.addHook('onRequest', (req, reply) => this.#guard(req, reply));
    }
    this.#errors();
    this.#routes();
  }

  /** The bound address (useful with HTTP_PORT=0). */
  get address(): { host: string; port: number } {
    if (!this.#address) throw new Error('http server not listening');
    return this.#address;
  }

  /** Time spent checking passwords with bcrypt so far, in ms (what a flood of wrong ones costs). */
  get bcryptMs(): number {
    return this.#auth.bcryptMs;
  }

  #routes() {
    const { registry, liveness, readiness } = this.deps;
    const exposition = new Exposition(registry);
    this.app.get('/metrics', async (req, reply) => {
      const snapshot = await exposition.snapshot();
      void reply.header('vary', 'Accept-Encoding');
      const coding = chooseCoding(req.headers['accept-encoding']);
      if (coding === undefined) return plain(reply, 406);
      void reply.header('content-type', exposition.contentType);
      if (coding === 'identity') return reply.send(snapshot.body);
      return reply.header('content-encoding', 'gzip').send(await snapshot.gzip());
    });
    this.app.get('/healthz', async (_req, reply) => {
      const checks = Object.fromEntries(Object.entries(liveness).map(([name, check]) => [name, check()]));
      const ok = Object.values(checks).every((c) => c.ok);
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unhealthy', checks });
    });
    this.app.get('/readyz', async (_req, reply) => {
      const s = readiness();
      return reply.code(s.ready ? 200 : 503).send({ status: s.ready ? 'ready' : 'not ready', ...s });
    });
    // what a person who opens the address sees: where to go, and what an SRE asks first; behind the
    // same credentials as /metrics, and never cached (it is the state now)
    const { status } = this.deps;
    this.app.get('/', async (req, reply) => {
      const summary = status?.();
      void reply.header('cache-control', 'no-store');
      if (summary && (req.query as { format?: unknown }).format === 'json') return reply.send(summary);
      return reply.header('content-type', 'text/html; charset=utf-8').send(renderLandingPage(summary));
    });
    if (status)
      this.app.get('/status', async (_req, reply) =>
        reply.header('cache-control', 'no-store').send(status()),
      );
  }

  /** Answers that say what went wrong in a word: never an internal message, never the path echoed. */
  #errors() {
    this.app.setNotFoundHandler((req, reply) => {
      const fields = { method: req.method, path: pathOf(req), remoteAddress: req.ip };
      req.log.debug(fields, 'not found');
      const count = this.#notFound.hit();
      if (count !== undefined)
        req.log.warn(
          { ...fields, count },
          'requests for unknown paths; this warning repeats at most once a minute',
        );
      return plain(reply, 404);
    });
    this.app.setErrorHandler((err: FastifyError, req, reply) => {
      const status =
        err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      const fields = {
        method: req.method,
        path: pathOf(req),
        status,
        err: { message: err.message, code: err.code },
      };
      if (status >= 500) req.log.error(fields, 'request failed');
      else req.log.debug(fields, 'bad request');
      return plain(reply, status);
    });
  }

  /** Settings from the web config take effect: credentials now, TLS for new connections. */
  #apply(s: WebSettings) {
    this.#auth.update(s);
    if (!s.tls) return;
    const server = this.app.server as unknown as TlsServer & {
      requestCert: boolean;
      rejectUnauthorized: boolean;
    };
    server.setSecureContext(secureContextOptions(s.tls));
    Object.assign(server, clientCertOptions(s.tls));
  }

  /** The client_auth_type policies Node does not enforce itself: checked right after the handshake. */
  #enforceClientCerts(log: Logger) {
    this.app.server.on('secureConnection', (socket: TLSSocket) => {
      const tls = this.#web?.current.tls;
      const why = tls && clientCertRejection(socket, tls);
      if (!why) return;
      log.debug({ remoteAddress: socket.remoteAddress, reason: why }, 'TLS connection refused');
      socket.destroy();
    });
  }

  async #guard(req: FastifyRequest, reply: FastifyReply) {
    void reply.headers(this.#web!.current.headers);
    // by route, not by path text: everything but the probes (404s included) needs credentials
    if (OPEN_ROUTES.has(req.routeOptions.url ?? '')) return;
    // a scrape with credentials that verified before: no bcrypt, nothing to wait for
    if (this.#auth.known(req.headers.authorization) === 'ok') return;
    // a client that hangs up while its password waits for bcrypt gives its place up
    const gone = new AbortController();
    const socket = req.raw.socket;
    const onClose = () => gone.abort();
    socket.once('close', onClose);
    let result: AuthResult;
    try {
      result = await this.#auth.verify(req.headers.authorization, { address: req.ip, signal: gone.signal });
    } finally {
      socket.off('close', onClose);
    }
    if (result === 'ok') return;
    this.#denied(req, result);
    if (result === 'busy') return plain(reply.header('retry-after', '1'), 429);
    return plain(reply.header('www-authenticate', this.#auth.challenges), 401);
  }

  /** A failed authentication: debug each, warn at most once a minute. Never the credentials. */
  #denied(req: FastifyRequest, reason: Exclude<AuthResult, 'ok'>) {
    const fields = { reason, remoteAddress: req.ip, path: pathOf(req) };
    req.log.debug(fields, 'unauthorized request');
    const count = this.#denials.hit();
    if (count === undefined) return;
    req.log.warn(
      { ...fields, count },
      'unauthorized requests (missing or wrong credentials, or too many checks waiting); this warning repeats at most once a minute',
    );
  }

  protected async onStart(): Promise<void> {
    await this.app.listen({ host: this.deps.host, port: this.deps.port });
    this.#web?.start();
    const addr = this.app.server.address();
    if (addr && typeof addr === 'object') this.#address = { host: addr.address, port: addr.port };
    this.deps.logger.info(
      { address: this.#address, tls: !!this.#web?.current.tls, auth: this.#auth.schemes },
      'http server listening',
    );
    if (this.#web && !this.#auth.enabled)
      this.#log.warn(
        { file: this.deps.web?.configFile },
        'authentication is off on purpose (basic_auth_users: {}): /metrics answers without credentials',
      );
  }

  protected async onStop(): Promise<void> {
    this.#web?.stop();
    await this.app.close();
    await this.#auth.close();
  }
}

/** The path alone (a query string may carry a token), cut short: a client chooses what it is. */
function pathOf(req: FastifyRequest): string {
  const path = req.url.split('?')[0] ?? '';
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}

function plain(reply: FastifyReply, status: number, text = STATUS_CODES[status] ?? 'Error') {
  return reply.code(status).type('text/plain; charset=utf-8').send(`${text}\n`);
}
