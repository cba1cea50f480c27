/**
 * DB_SSL_MODE with libpq's meanings, mapped onto Node's TLS options.
 *
 *   disable      plaintext only
 *   allow        plaintext first; TLS (unverified) if the server refuses plaintext
 *   prefer       TLS (unverified) first; plaintext if the server has no TLS
 *   require      TLS, unverified, unless DB_SSL_ROOT_CERT is set: then like verify-ca (as libpq does)
 *   verify-ca    TLS, the chain checked against DB_SSL_ROOT_CERT (or the system store), any host name
 *   verify-full  TLS, the chain and the host name checked
 *
 * DB_SSL_REJECT_UNAUTHORIZED=false turns verification off in the verify modes (config warns).
 *
 * DB_SSL_MODE left unset (the built-in verify-full) means prefer for a loopback host or a Unix
 * socket, as libpq's own default: that traffic never leaves the machine, and a local server without
 * TLS just works. Decided per host, so a DATABASE_URL_FILE that moves to a remote host verifies again.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { SslMode } from '../config/fields.js';

import { effectiveSslMode } from '../config/ssl-mode.js';

export { effectiveSslMode, isLocalHost } from '../config/ssl-mode.js';

export interface TlsSettings {
  mode: SslMode;
  rejectUnauthorized: boolean;
  rootCertFile?: string | undefined;
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** DB_SSL_MODE was not set (neither it nor sslmode in the URL): the built-in default applies. */
  modeDefaulted?: boolean | undefined;
}

/** false = plaintext. */
export type Transport = false | ConnectionOptions;

export interface TransportPlan {
  first: Transport;
  /** Tried when the server refuses `first` for lack of (or insistence on) TLS: allow and prefer only. */
  fallback?: Transport;
  verified: boolean;
}

export function planTransport(s: TlsSettings, host: string): TransportPlan {
  const mode = effectiveSslMode(s, host);
  if (mode === 'disable' || host.startsWith('/')) return { first: false, verified: false };
  const files: ConnectionOptions = {};
  if (s.rootCertFile) files.ca = readFileSync(s.rootCertFile);
  if (s.certFile) files.cert = readFileSync(s.certFile);
  if (s.keyFile) files.key = readFileSync(s.keyFile);

  const unverified: ConnectionOptions = { ...files, rejectUnauthorized: false };
  const chainOnly: ConnectionOptions = {
    ...files,
    rejectUnauthorized: true,
    checkServerIdentity: () => undefined,
  };
  const full: ConnectionOptions = {
    ...files,
    rejectUnauthorized: true,
    servername: isIp(host) ? undefined : host,
  };

  switch (mode) {
    case 'allow':
      return { first: false, fallback: unverified, verified: false };
    case 'prefer':
      return { first: unverified, fallback: false, verified: false };
    case 'require':
      return s.rootCertFile ? { first: chainOnly, verified: true } : { first: unverified, verified: false };
    case 'verify-ca':
      return s.rejectUnauthorized
        ? { first: chainOnly, verified: true }
        : { first: unverified, verified: false };
    case 'verify-full':
      return s.rejectUnauthorized ? { first: full, verified: true } : { first: unverified, verified: false };
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** The server answered the TLS request with "no TLS here". */
export function isTlsUnsupported(err: unknown): boolean {
  return err instanceof Error && /server does not support SSL/i.test(err.message);
}

/** pg_hba.conf rejected a plaintext connection (a hostssl-only rule): SQLSTATE 28000, "no encryption". */
export function isPlaintextRejected(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '28000' && /no encryption/i.test(e.message ?? '');
}
