/**
 * `pg-maintd demo`: a throwaway local PostgreSQL cluster (the test harness's code) and the daemon
 * running against it. Ctrl-C stops both and removes the cluster.
 */
import { loadConfig, type LoadInput } from '../config/load.js';
import { runDaemon } from '../daemon.js';
import { LocalCluster } from '../embedded/local-cluster.js';
import { createLogger } from '../log/logger.js';
import { Catalog } from '../backup/catalog.js';

export async function runDemo(input: LoadInput): Promise<void> {
  const cluster = new LocalCluster();
  // Start the cluster before loading config: DATABASE_URL points at it.
  await cluster.start();
  process.env.PGPASSWORD = cluster.password; // the password stays out of the URL, argv and logs
  const loaded = loadConfig({
    ...input,
    env: {
      ...process.env,
      DATABASE_URL: cluster.url('postgres', cluster.user, null),
      DB_SSL_MODE: 'disable', // the throwaway cluster listens on loopback without TLS
      HTTP_HOST: process.env.HTTP_HOST ?? '127.0.0.1',
    },
  });
  const logger = createLogger({ ...loaded.config.log, secrets: loaded.secrets });
  logger.info(
    { binaries: cluster.binaries, dataDir: cluster.dataDir },
    'demo: throwaway PostgreSQL cluster started',
  );
  await runDaemon(loaded, logger, {
    first: [cluster],
    onReady: ({ http, pool, scheduler, storage }) => {
      const base = `http://${http.address.host.includes(':') ? `[${http.address.host}]` : http.address.host}:${http.address.port}`;
      process.stdout.write(
        [
          '',
          'pg-maintd demo is running.',
          `  database  postgresql://${pool.description}  (password in PGPASSWORD of this process)`,
          `  metrics   ${base}/metrics`,
          `  liveness  ${base}/healthz`,
          `  readiness ${base}/readyz`,
          'Press Ctrl-C to stop; the throwaway cluster is removed.',
          '',
        ].join('\n'),
      );
      // A first backup right away, so the demo shows one in the store.
      if (!scheduler.has('backup')) {
        process.stdout.write('  backup    off (BACKUP_SCHEDULE=off)\n');
        return;
      }
      void scheduler
        .trigger('backup')
        .then(async () => {
          const catalog = new Catalog(storage);
          for (const database of loaded.config.backup.databases) {
            const latest = await catalog.latest(database);
            process.stdout.write(
              latest
                ? `  backup    ${storage.description}/${latest.key} (${latest.size} bytes, manifest beside it)\n`
                : `  backup    none yet for ${database}: see the log above\n`,
            );
          }
        })
        .catch((err: unknown) =>
          logger.error(
            { err: { message: (err as Error).message } },
            'demo: the first backup could not be listed',
          ),
        );
    },
  });
}
