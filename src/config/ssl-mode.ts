/**
 * Which TLS mode a connection uses. Verification is the default; a server on this machine (a Unix
 * socket, localhost, 127.0.0.0/8, ::1), when no mode was set at all, gets libpq's own default,
 * prefer: its traffic never leaves the machine, and a local first run should not fail on TLS.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { SslMode } from './fields.js';

/** The mode used for `host`: the one set, or prefer for a local host when none was set. */
export function effectiveSslMode(
  s: { mode: SslMode; modeDefaulted?: boolean | undefined },
  host: string,
): SslMode {
  return s.modeDefaulted && isLocalHost(host) ? 'prefer' : s.mode;
}

/** A Unix socket folder, localhost, 127.0.0.0/8 or ::1: the connection stays on this machine. */
export function isLocalHost(host: string): boolean {
  if (host.startsWith('/')) return true;
  const h = host.replace(/^\[(.*)\]$/, '$1');
  return /^localhost$/i.test(h) || (isIPv4(h) && h.startsWith('127.')) || (isIPv6(h) && h === '::1');
}
