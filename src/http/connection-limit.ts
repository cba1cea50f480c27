/**
 * Open connections per client address: one client holding hundreds of sockets (slowloris, or never
 * reading its answers) would take the file descriptors the backups and the database pools need.
 * Past the limit a new connection from that address is closed at once; other clients are not
 * affected, so the kubelet's probes and Prometheus still get in.
 */
import type { Server, Socket } from 'node:net';

export function limitConnectionsPerClient(
  server: Server,
  max: number,
  onRefused: (address: string) => void,
): void {
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? 'unknown';
    const n = open.get(address) ?? 0;
    if (n >= max) {
      onRefused(address);
      socket.destroy();
      return;
    }
    open.set(address, n + 1);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left > 0) open.set(address, left);
      else open.delete(address);
    });
  });
}
