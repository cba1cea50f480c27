/**
 * tls_server_config of the web config, as exporter-toolkit reads it: TLS is on when a certificate,
 * key, client CA or client auth policy is set, and then needs a certificate and its key. What
 * OpenSSL would refuse later is a problem now.
 */
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureVersion } from 'node:tls';
import { WebConfigFile, strictKeys, strings } from './web-file.js';
import {
  CIPHER_SUITES,
  CLIENT_AUTH_TYPES,
  CURVES,
  DEFAULT_TLS12_SUITES,
  secureContextOptions,
  TLS13_SUITES,
  type ClientAuthType,
  type TlsSettings,
} from './web-tls.js';
import { errorMessage } from '../core/errors.js';

const TLS_VERSIONS: Record<string, SecureVersion> = {
  TLS10: 'TLSv1',
  TLS11: 'TLSv1.1',
  TLS12: 'TLSv1.2',
  TLS13: 'TLSv1.3',
};

export function readTls(t: Record<string, unknown> | undefined, ctx: WebConfigFile): TlsSettings | undefined {
  if (!t) return undefined;
  strictKeys(t, 'tls_server_config', ctx);
  const k = (name: string) => `tls_server_config.${name}`;
  const set = (name: string) => t[name] !== undefined && t[name] !== null && t[name] !== '';
  // as exporter-toolkit: TLS is on when any of these is set, and then needs a certificate and key
  const enabled = ['cert_file', 'cert', 'key_file', 'key', 'client_ca_file', 'client_ca', 'client_auth_type'];
  if (!enabled.some(set)) return undefined;
  const pem = (file: string, inline: string, what: string, required: boolean) => {
    if (set(file) && set(inline)) return ctx.problem(`only one of ${k(file)} and ${k(inline)}`);
    if (set(file)) return ctx.readFile(k(file), t[file], what);
    if (set(inline))
      return typeof t[inline] === 'string' ? t[inline] : ctx.problem(`${k(inline)} to be PEM text`);
    if (required)
      return ctx.problem(`${k(file)} (or ${inline}) as well: TLS needs a certificate and its key`);
    return undefined;
  };
  const cert = pem('cert_file', 'cert', 'a PEM certificate file', true);
  const key = pem('key_file', 'key', 'a PEM private key file', true);
  const ca = pem('client_ca_file', 'client_ca', 'a PEM file of client CA certificates', false);
  let pairOk = true; // a key that does not fit its certificate is reported here, once
  if (cert !== undefined && key !== undefined) {
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      pairOk = false;
      ctx.problem(
        `${k('cert_file')} and ${k('key_file')} to hold a PEM certificate and its private key (${errorMessage(err).split('\n')[0]})`,
      );
    }
  }
  if (ca !== undefined && !validCaBundle(ca)) ctx.problem(`${k('client_ca_file')} to hold PEM certificates`);

  const clientAuth = (t.client_auth_type ?? 'NoClientCert') as ClientAuthType;
  if (!CLIENT_AUTH_TYPES.includes(clientAuth))
    ctx.problem(`${k('client_auth_type')} to be one of ${CLIENT_AUTH_TYPES.join(', ')}`);
  if (ca !== undefined && clientAuth === 'NoClientCert')
    ctx.problem(
      `${k('client_auth_type')} to be set (e.g. RequireAndVerifyClientCert) since client CAs are given: exporter-toolkit refuses client CAs without a client auth policy`,
    );
  let allowedSans: string[] | undefined;
  if (t.client_allowed_sans !== undefined && t.client_allowed_sans !== null) {
    allowedSans = strings(t.client_allowed_sans, k('client_allowed_sans'), ctx);
    if (clientAuth !== 'RequireAnyClientCert' && clientAuth !== 'RequireAndVerifyClientCert')
      ctx.problem(
        `${k('client_auth_type')} to be RequireAnyClientCert or RequireAndVerifyClientCert, which client_allowed_sans needs`,
      );
  }
  const version = (name: string, dflt: SecureVersion) => {
    if (!set(name)) return dflt;
    const v = TLS_VERSIONS[String(t[name])];
    return v ?? ctx.problem(`${k(name)} to be one of ${Object.keys(TLS_VERSIONS).join(', ')}`) ?? dflt;
  };
  const minVersion = version('min_version', 'TLSv1.2');
  const maxVersion = version('max_version', 'TLSv1.3');
  if (minVersion > maxVersion) ctx.problem(`${k('min_version')} not above ${k('max_version')}`);
  const named = (name: string, table: Record<string, string | null>) => {
    if (!set(name)) return undefined;
    const list = strings(t[name], k(name), ctx) ?? [];
    const unknown = list.filter((n) => !Object.hasOwn(table, n));
    if (unknown.length)
      ctx.problem(
        `${k(name)} to hold names Go knows, such as ${Object.keys(table)[0]} (unknown: ${unknown.join(', ')})`,
      );
    return list.map((n) => table[n]).filter((n): n is string => !!n);
  };
  const suites = named('cipher_suites', CIPHER_SUITES);
  const curves = named('curve_preferences', CURVES);
  const honor = t.prefer_server_cipher_suites ?? true;
  if (typeof honor !== 'boolean') ctx.problem(`${k('prefer_server_cipher_suites')} to be true or false`);
  if (cert === undefined || key === undefined || !pairOk) return undefined;
  const settings: TlsSettings = {
    cert,
    key,
    ca,
    clientAuth,
    allowedSans,
    minVersion,
    maxVersion,
    // Go's cipher_suites do not touch TLS 1.3, whose suites stay the default; without them, Go's
    // default TLS 1.2 suites (forward secret only), not Node's
    ciphers: [...TLS13_SUITES, ...(suites?.length ? suites : DEFAULT_TLS12_SUITES)].join(':'),
    ecdhCurve: curves?.length ? curves.join(':') : undefined,
    honorCipherOrder: honor !== false,
  };
  // what OpenSSL refuses (a key that does not match its certificate, ciphers or curves it lacks) is
  // a configuration problem now, not a failed start or a failed reload later
  try {
    createSecureContext(secureContextOptions(settings));
  } catch (err) {
    ctx.problem(`tls_server_config to be usable by OpenSSL (${errorMessage(err)})`);
    return undefined;
  }
  return settings;
}

function validCaBundle(pem: string): boolean {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  try {
    for (const b of blocks) new X509Certificate(b);
  } catch {
    return false;
  }
  return blocks.length > 0;
}
