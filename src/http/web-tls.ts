/**
 * TLS of the HTTP server from the web config: Node's server and context options, and the
 * client-certificate policies Node does not enforce by itself (exporter-toolkit's client_auth_type
 * values are Go's tls.ClientAuthType).
 */
import type { SecureContextOptions, SecureVersion, TLSSocket } from 'node:tls';

export const CLIENT_AUTH_TYPES = [
  'NoClientCert',
  'RequestClientCert',
  'RequireAnyClientCert',
  'VerifyClientCertIfGiven',
  'RequireAndVerifyClientCert',
] as const;
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];

/** The TLS of the HTTP server, read from tls_server_config. */
export interface TlsSettings {
  /** PEM text; the key is secret and never logged. */
  cert: string;
  key: string;
  ca?: string;
  clientAuth: ClientAuthType;
  allowedSans?: string[];
  minVersion: SecureVersion;
  maxVersion: SecureVersion;
  ciphers: string;
  ecdhCurve?: string;
  honorCipherOrder: boolean;
}

/** Go's cipher suite names (tls.CipherSuites()) as OpenSSL names; TLS 1.3 suites are not configurable in Go. */
export const CIPHER_SUITES: Record<string, string | null> = {
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
  TLS_AES_128_GCM_SHA256: null,
  TLS_AES_256_GCM_SHA384: null,
  TLS_CHACHA20_POLY1305_SHA256: null,
};
/**
 * The TLS 1.2 suites offered when cipher_suites is not set: what exporter-toolkit offers then. Its
 * web/tls_config.go (ConfigToTLSConfig) leaves tls.Config.CipherSuites nil, so Go's default applies:
 * crypto/tls defaults.go defaultCipherSuites(), cipherSuitesPreferenceOrder without the RSA key
 * exchange (tlsrsakex), 3DES, RC4 and CBC-SHA256 suites. All are ECDHE: forward secret. Node's own
 * default would also offer RSA key exchange (AES128-GCM-SHA256, ...), which is not.
 */
export const DEFAULT_TLS12_SUITES = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-SHA',
  'ECDHE-RSA-AES128-SHA',
  'ECDHE-ECDSA-AES256-SHA',
  'ECDHE-RSA-AES256-SHA',
];
export const TLS13_SUITES = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
];
export const CURVES: Record<string, string> = {
  CurveP256: 'P-256',
  CurveP384: 'P-384',
  CurveP521: 'P-521',
  X25519: 'X25519',
};

/** What tls.Server.setSecureContext() takes: certificate, key, client CAs, versions, ciphers. */
export function secureContextOptions(t: TlsSettings): SecureContextOptions {
  return {
    cert: t.cert,
    key: t.key,
    ca: t.ca,
    minVersion: t.minVersion,
    maxVersion: t.maxVersion,
    ciphers: t.ciphers,
    ecdhCurve: t.ecdhCurve,
    honorCipherOrder: t.honorCipherOrder,
  };
}

/**
 * Whether the server asks for a client certificate, and whether Node itself rejects a connection
 * without a verified one (RequireAndVerifyClientCert: at the handshake).
 */
export function clientCertOptions(t: TlsSettings): { requestCert: boolean; rejectUnauthorized: boolean } {
  return {
    requestCert: t.clientAuth !== 'NoClientCert',
    rejectUnauthorized: t.clientAuth === 'RequireAndVerifyClientCert',
  };
}

/** Why a connection that completed its handshake must still be closed, or undefined when it may stay. */
export function clientCertRejection(socket: TLSSocket, t: TlsSettings): string | undefined {
  if (t.clientAuth === 'NoClientCert' || t.clientAuth === 'RequestClientCert') return undefined;
  const cert = socket.getPeerCertificate();
  const given = cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
  if (!given) return t.clientAuth === 'VerifyClientCertIfGiven' ? undefined : 'no client certificate';
  if (t.clientAuth !== 'RequireAnyClientCert' && !socket.authorized)
    return `client certificate not verified (${String(socket.authorizationError)})`;
  if (t.allowedSans) {
    const sans = subjectAltNames(cert.subjectaltname ?? '');
    if (!sans.some((s) => t.allowedSans!.includes(s)))
      return 'client certificate has none of client_allowed_sans';
  }
  return undefined;
}

/** "DNS:a, IP Address:10.0.0.1, URI:spiffe://x, email:b@c" -> the values (Node quotes odd ones as JSON). */
function subjectAltNames(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|, )[A-Za-z ]+:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    const v = m[1]!;
    try {
      out.push(v.startsWith('"') ? (JSON.parse(v) as string) : v);
    } catch {
      out.push(v);
    }
  }
  return out;
}
