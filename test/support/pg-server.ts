/**
 * The real-PostgreSQL test harness. The first provider that applies wins:
 *   1. TEST_DATABASE_URL: an existing server that allows CREATE DATABASE;
 *   2. a Docker engine: testcontainers' PostgreSQL module, pg_stat_statements preloaded;
 *   3. local binaries (initdb/pg_ctl): a throwaway cluster on a free loopback port;
 *   4. none: fail, saying what to install.
 */
import { LocalCluster } from '../../src/embedded/local-cluster.js';
import { dockerEngineAnswers } from './docker.js';

export interface PgServer {
  /** Admin URL (can CREATE DATABASE), with the password in it. */
  url: string;
  provider: 'env' | 'testcontainers' | 'local';
  stop(): Promise<void>;
}

export async function startPgServer(): Promise<PgServer> {
  if (process.env.TEST_DATABASE_URL) {
    return { url: process.env.TEST_DATABASE_URL, provider: 'env', stop: async () => undefined };
  }
  if (await dockerEngineAnswers()) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const container = await new PostgreSqlContainer(process.env.TEST_PG_IMAGE ?? 'postgres:17')
      .withCommand([
        'postgres',
        '-c',
        'shared_preload_libraries=pg_stat_statements',
        '-c',
        'track_io_timing=on',
      ])
      .start();
    return {
      url: container.getConnectionUri(),
      provider: 'testcontainers',
      stop: async () => void (await container.stop()),
    };
  }
  let cluster: LocalCluster;
  try {
    cluster = new LocalCluster();
  } catch (err) {
    throw new Error(
      `no PostgreSQL for the tests: set TEST_DATABASE_URL, start a Docker engine, or install the server binaries ` +
        `(apt-get install postgresql). ${(err as Error).message}`,
      { cause: err },
    );
  }
  await cluster.start();
  return { url: cluster.url(), provider: 'local', stop: () => cluster.stop() };
}
