#!/usr/bin/env node
/**
 * The limit a /metrics answer can reach on this machine: Fastify serving a fixed body from memory,
 * nothing else. `node bench/static-body.mjs BODY GZIP CONTENT_TYPE` serves the bytes of the file
 * BODY on GET /metrics, and those of GZIP (already compressed) to a request that accepts gzip, on a
 * free loopback port, and writes one JSON line with it: {"msg":"listening","port":N}. Run by
 * bench/metrics.mjs as a process of its own, as pg-maintd is.
 */
import { readFileSync } from 'node:fs';
import process from 'node:process';
import Fastify from 'fastify';

const [bodyFile, gzipFile, contentType] = process.argv.slice(2);
const body = readFileSync(bodyFile);
const gzip = readFileSync(gzipFile);
const app = Fastify({ logger: false });
app.get('/metrics', async (req, reply) => {
  void reply.header('content-type', contentType).header('vary', 'Accept-Encoding');
  // what a server that only serves its cache would check: does the client take gzip at all
  if (/\bgzip\b/.test(req.headers['accept-encoding'] ?? ''))
    return reply.header('content-encoding', 'gzip').send(gzip);
  return reply.send(body);
});
await app.listen({ host: '127.0.0.1', port: 0 });
console.log(JSON.stringify({ level: 30, msg: 'listening', port: app.server.address().port }));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => void app.close().then(() => process.exit(0)));
