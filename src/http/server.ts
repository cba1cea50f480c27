/** The HTTP server: /metrics (Prometheus text), /healthz (liveness), /readyz (readiness). */
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
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
import { Authenticator, type AuthResult } from './auth.js';
import type { WebFiles, WebSettings } from './web-config.js';
import { clientCertOptions, clientCertRejection, secureContextOptions } from './web-tls.js';
import { WebSettingsWatcher } from './web-watch.js';

const QUIET_ROUTES = new Set(['/metrics', '/healthz', '/readyz']);
/** Kubernetes probes: open whatever authentication is configured. */
const OPEN_ROUTES = new Set(['/healthz', '/readyz']);
const DENIAL_WARN_EVERY_MS = 60_000;

export interface HttpDeps {
  host: string;
  port: number;
  registry: Registry;
  logger: Logger;
  liveness: Record<string, () => LivenessCheck>;
  readiness: () => ReadinessState;
  /** WEB_CONFIG_FILE and WEB_BEARER_TOKEN_FILE: TLS, headers and credentials, re-read on change. */
  web?: WebFiles;
}

export class HttpServer extends Service {
  readonly name = 'http-server';
  readonly app: FastifyInstance;
  #address: { host: string; port: number } | undefined;
  #web: WebSettingsWatcher | undefined;
  #auth = new Authenticator();
  #denials = { count: 0, lastWarn: 0 };

  /** Throws WebConfigError (exit 78) when the web config or token file is invalid. */
  constructor(private readonly deps: HttpDeps) {
    super();
    const log = deps.logger.child({ component: 'http' });
    if (deps.web?.configFile || deps.web?.bearerTokenFile) {
      this.#web = new WebSettingsWatcher(deps.web, log, (next) => this.#apply(next));
    }
    const tls = this.#web?.current.tls;
    // request logging never includes headers, so credentials stay out of the log
    this.app = Fastify({
      loggerInstance: log as FastifyBaseLogger,
      // probes and scrapes every few seconds would drown the log; other requests are logged
      logController: new LogController({
        disableRequestLogging: (req) => QUIET_ROUTES.has(req.url.split('?')[0] ?? ''),
      }),
      forceCloseConnections: true,
      return503OnClosing: true,
      ...(tls ? { https: { ...secureContextOptions(tls), ...clientCertOptions(tls) } } : {}),
    }) as unknown as FastifyInstance;
    if (this.#web) {
      this.#auth.update(this.#web.current);
      if (tls) this.#enforceClientCerts(log);
      this.app.addHook('onRequest', (req, reply) => this.#guard(req, reply));
    }
    this.#routes();
  }

  /** The bound address (useful with HTTP_PORT=0). */
  get address(): { host: string; port: number } {
    if (!this.#address) throw new Error('http server not listening');
    return this.#address;
  }

  #routes() {
    const { registry, liveness, readiness } = this.deps;
    const exposition = new Exposition(registry);
    this.app.get('/metrics', async (_req, reply) => {
      const body = await exposition.render();
      return reply.header('content-type', exposition.contentType).send(body);
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
    const headers = this.#web!.current.headers;
    for (const [name, value] of Object.entries(headers)) void reply.header(name, value);
    // by route, not by path text: everything but the probes (404s included) needs credentials
    if (OPEN_ROUTES.has(req.routeOptions.url ?? '')) return;
    const result = await this.#auth.verify(req.headers.authorization);
    if (result === 'ok') return;
    this.#denied(req, result);
    return reply
      .code(401)
      .header('www-authenticate', this.#auth.challenges)
      .type('text/plain; charset=utf-8')
      .send('Unauthorized\n');
  }

  /** A failed authentication: debug each, warn at most once a minute. Never the credentials. */
  #denied(req: FastifyRequest, reason: Exclude<AuthResult, 'ok'>) {
    const d = this.#denials;
    d.count++;
    const fields = { reason, remoteAddress: req.ip, path: req.url.split('?')[0] };
    req.log.debug(fields, 'unauthorized request');
    const now = Date.now();
    if (now - d.lastWarn < DENIAL_WARN_EVERY_MS) return;
    req.log.warn(
      { ...fields, count: d.count },
      'unauthorized requests (missing or wrong credentials); this warning repeats at most once a minute',
    );
    d.count = 0;
    d.lastWarn = now;
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
  }

  protected async onStop(): Promise<void> {
    this.#web?.stop();
    await this.app.close();
  }
}
