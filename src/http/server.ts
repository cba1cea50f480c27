/** The HTTP server: /metrics (Prometheus text), /healthz (liveness), /readyz (readiness). */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from '../log/logger.js';
import { Service } from '../lifecycle/service.js';
import { Exposition } from '../metrics/exposition.js';
import type { LivenessCheck } from '../health/watchdog.js';
import type { ReadinessState } from '../health/readiness.js';

const QUIET_ROUTES = new Set(['/metrics', '/healthz', '/readyz']);

export interface HttpDeps {
  host: string;
  port: number;
  registry: Registry;
  logger: Logger;
  liveness: Record<string, () => LivenessCheck>;
  readiness: () => ReadinessState;
}

export class HttpServer extends Service {
  readonly name = 'http-server';
  readonly app: FastifyInstance;
  #address: { host: string; port: number } | undefined;

  constructor(private readonly deps: HttpDeps) {
    super();
    this.app = Fastify({
      loggerInstance: deps.logger.child({ component: 'http' }) as FastifyBaseLogger,
      // probes and scrapes every few seconds would drown the log; other requests are logged
      logController: new LogController({
        disableRequestLogging: (req) => QUIET_ROUTES.has(req.url.split('?')[0] ?? ''),
      }),
      forceCloseConnections: true,
      return503OnClosing: true,
    });
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

  protected async onStart(): Promise<void> {
    await this.app.listen({ host: this.deps.host, port: this.deps.port });
    const addr = this.app.server.address();
    if (addr && typeof addr === 'object') this.#address = { host: addr.address, port: addr.port };
    this.deps.logger.info({ address: this.#address }, 'http server listening');
  }

  protected async onStop(): Promise<void> {
    await this.app.close();
  }
}
