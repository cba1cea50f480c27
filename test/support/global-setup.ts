/** Starts one PostgreSQL server for the whole run; each test file makes its own database in it. */
import type { TestProject } from 'vitest/node';
import { startPgServer } from './pg-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
    pgProvider: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startPgServer();
  project.provide('pgAdminUrl', server.url);
  project.provide('pgProvider', server.provider);
  return () => server.stop();
}
