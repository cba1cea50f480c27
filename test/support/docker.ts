/** Does a Docker engine answer? (The client alone is not enough: testcontainers needs the daemon.) */
import { request } from 'node:http';
import { existsSync } from 'node:fs';

export async function dockerEngineAnswers(timeoutMs = 1500): Promise<boolean> {
  const host = process.env.DOCKER_HOST;
  const socketPath = host?.startsWith('unix://')
    ? host.slice('unix://'.length)
    : host
      ? undefined
      : '/var/run/docker.sock';
  const tcp = host?.startsWith('tcp://') ? new URL(host.replace('tcp://', 'http://')) : undefined;
  if (socketPath && !existsSync(socketPath)) return false;
  if (!socketPath && !tcp) return false;
  return new Promise((resolve) => {
    const req = request(
      socketPath
        ? { socketPath, path: '/_ping', timeout: timeoutMs }
        : { host: tcp!.hostname, port: tcp!.port, path: '/_ping', timeout: timeoutMs },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
