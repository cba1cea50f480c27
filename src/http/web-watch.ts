/**
 * Keeps the web settings current: every second it looks at the files (web config, the certificate,
 * key and CA files it names, the bearer token file) and, when one changed, reads them all again.
 * A change that does not validate is logged and the last good settings stay: never a crash, never
 * a fall back to no authentication.
 */
import { fileStamp } from '../core/file-stamp.js';
import type { Logger } from '../log/logger.js';
import { readWebSettings, WebConfigError, type WebFiles, type WebSettings } from './web-config.js';
import { errorMessage } from '../core/errors.js';

export class WebSettingsWatcher {
  #current: WebSettings;
  #watched: string[];
  #signature: string;
  #timer: NodeJS.Timeout | undefined;

  /** Reads the files now; throws WebConfigError (exit 78) when they are invalid. */
  constructor(
    private readonly files: WebFiles,
    private readonly logger: Logger,
    private readonly onChange: (next: WebSettings, previous: WebSettings) => void,
    private readonly intervalMs = 1000,
  ) {
    const first = readWebSettings(files);
    if (!first.settings) throw new WebConfigError(first.problems);
    this.#current = first.settings;
    this.#watched = first.files;
    this.#signature = signature(this.#watched);
  }

  get current(): WebSettings {
    return this.#current;
  }

  start(): void {
    this.#timer ??= setInterval(() => this.check(), this.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Re-reads the files when any of them changed since the last look. */
  check(): void {
    const before = signature(this.#watched);
    if (before === this.#signature) return;
    const read = readWebSettings(this.files);
    const settled = signature(this.#watched) === before; // else a file changed while being read
    // on failure, files of both versions are watched: fixing either one is seen
    this.#watched = read.settings ? read.files : [...new Set([...this.#watched, ...read.files])];
    this.#signature = settled ? signature(this.#watched) : '';
    if (!read.settings) {
      this.logger.error(
        { problems: read.problems.map((p) => `${p.field} ${p.given}: expected ${p.allowed}`) },
        'web config change rejected: the last good settings stay in force',
      );
      return;
    }
    const next = read.settings;
    const previous = this.#current;
    const dropped = droppedUsers(previous, next);
    if (dropped) {
      // a file being rewritten in place is empty or cut short for a moment: that must never open
      // /metrics, nor lock Prometheus out; only `basic_auth_users: {}` removes every user
      this.logger.error(
        { file: this.files.configFile, usersBefore: previous.users.size },
        `web config change rejected: ${dropped}; the last good settings stay in force (write \`basic_auth_users: {}\` to remove every user on purpose)`,
      );
      return;
    }
    if (!!next.tls !== !!previous.tls) {
      this.logger.error(
        { tls: !!previous.tls },
        'web config change turns TLS on or off, which needs a restart: TLS stays as it was',
      );
      next.tls = previous.tls;
    }
    try {
      this.onChange(next, previous);
    } catch (err) {
      // never a crash, never a half-applied change: the last good settings stay
      try {
        this.onChange(previous, next);
      } catch {
        // the previous settings were applied once; what stays is what they left
      }
      this.logger.error(
        { err: { message: errorMessage(err) } },
        'web config change could not be applied: the last good settings stay in force',
      );
      return;
    }
    this.#current = next;
    const fields = { tls: !!next.tls, users: next.users.size, bearerToken: !!next.tokenDigest };
    if (previous.users.size && next.basicAuth === 'off')
      this.logger.warn(
        fields,
        next.tokenDigest
          ? 'web config reloaded: basic auth turned off on purpose (basic_auth_users: {}); the bearer token is still required'
          : 'web config reloaded: authentication turned off on purpose (basic_auth_users: {}); /metrics answers without credentials',
      );
    else this.logger.info(fields, 'web config reloaded');
  }
}

/** Why a change loses every basic-auth user without saying so, or undefined when it does not. */
function droppedUsers(previous: WebSettings, next: WebSettings): string | undefined {
  if (!previous.users.size || next.basicAuth !== 'absent') return undefined;
  return `basic_auth_users is gone from the file (${previous.users.size} user(s) before): half-written or cut short?`;
}

function signature(files: string[]): string {
  return files.map((f) => `${f}:${fileStamp(f)}`).join('|');
}
