/**
 * Looking for secrets where they must not be: every text a test captured (output, HTTP bodies,
 * files) and every process's command line on the machine, sampled while the test runs.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';

export interface Leak {
  /** Where the text came from (e.g. "stdout+stderr of backup (S3)"). */
  source: string;
  /** Which secret, and in which form (raw, url-encoded...). */
  secret: string;
  form: string;
  /** The text around the hit, with the secret itself replaced, so the report does not leak it. */
  context: string;
}

/** The forms a secret can take in output: as is, URL-encoded (both hex cases), JSON-escaped, base64. */
function secretForms(value: string): Array<{ form: string; text: string }> {
  const forms = new Map<string, string>();
  const add = (form: string, text: string) => {
    if (!forms.has(text)) forms.set(text, form);
  };
  add('raw', value);
  add('url-encoded', encodeURIComponent(value));
  add(
    'url-encoded (lower-case hex)',
    encodeURIComponent(value).replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase()),
  );
  add('form-encoded', new URLSearchParams({ x: value }).toString().slice(2));
  add('json-escaped', JSON.stringify(value).slice(1, -1));
  add('base64', Buffer.from(value).toString('base64').replace(/=+$/, ''));
  return [...forms].map(([text, form]) => ({ form, text }));
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;

export class SecretScanner {
  readonly #needles: Array<{ secret: string; form: string; text: string }> = [];
  readonly #captured: Array<{ source: string; text: string }> = [];

  constructor(secrets: Record<string, string>) {
    for (const [name, value] of Object.entries(secrets)) this.addSecret(name, value);
  }

  addSecret(name: string, value: string, extraForms: Record<string, string> = {}): void {
    if (value.length < 8) throw new Error(`secret ${name} is too short to scan for without false hits`);
    for (const f of secretForms(value)) this.#needles.push({ secret: name, ...f });
    // the random part alone: a half-masked secret (cut at an '@' or a quote) still shows it
    for (const m of value.matchAll(/[0-9a-f]{12,}/g))
      if (m[0] !== value) this.#needles.push({ secret: name, form: 'random part', text: m[0] });
    for (const [form, text] of Object.entries(extraForms)) this.#needles.push({ secret: name, form, text });
  }

  /**
   * An age identity (AGE-SECRET-KEY-1..., bech32): as written, in lower case (bech32 is case-blind),
   * and the key data alone without its prefix (a message that cut the prefix off still shows it).
   */
  addAgeIdentity(name: string, identity: string): void {
    const data = /^AGE-SECRET-KEY-(?:PQ-)?1([0-9A-Z]+)$/.exec(identity)?.[1];
    if (!data) throw new Error(`${name} is not an age identity`);
    this.addSecret(name, identity, {
      'lower-case': identity.toLowerCase(),
      'key data': data,
      'key data, lower-case': data.toLowerCase(),
    });
  }

  /** Keeps a text to scan (ANSI colours removed as well, so a coloured line cannot hide a hit). */
  capture(source: string, text: string | Buffer): void {
    const s = typeof text === 'string' ? text : text.toString('latin1');
    this.#captured.push({ source, text: s });
    const plain = s.replace(ANSI, '');
    if (plain !== s) this.#captured.push({ source: `${source} (colours removed)`, text: plain });
  }

  /** Everything captured, for a look by hand (SECRET_SCAN_DUMP=file in the test). */
  dump(): string {
    return this.#captured.map((c) => `===== ${c.source}\n${c.text}`).join('\n');
  }

  get sources(): number {
    return this.#captured.length;
  }

  get bytes(): number {
    return this.#captured.reduce((n, c) => n + c.text.length, 0);
  }

  /** Every hit of every secret in every captured text. */
  leaks(): Leak[] {
    const out: Leak[] = [];
    for (const { source, text } of this.#captured) {
      for (const n of this.#needles) {
        let at = text.indexOf(n.text);
        while (at >= 0) {
          const around = text.slice(Math.max(0, at - 60), at + n.text.length + 60);
          out.push({
            source,
            secret: n.secret,
            form: n.form,
            context: around.split(n.text).join(`<${n.secret}>`),
          });
          at = text.indexOf(n.text, at + 1);
        }
      }
    }
    return out;
  }
}

export interface ProcSeen {
  pid: number;
  comm: string;
  cmdline: string;
}

/**
 * Samples /proc/<pid>/cmdline of every process on the machine every `intervalMs`, keeping each
 * distinct command line. `onProcess` sees each new (pid, cmdline) once, to look closer while it runs.
 */
export class ProcSampler {
  readonly cmdlines = new Set<string>();
  readonly seen: ProcSeen[] = [];
  sweeps = 0;
  readonly #known = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly intervalMs = 50,
    private readonly onProcess?: (p: ProcSeen) => void,
  ) {}

  start(): void {
    this.#timer ??= setInterval(() => this.sample(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One sweep of /proc, also callable at known moments. */
  sample(): void {
    this.sweeps++;
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      let cmdline: string;
      try {
        cmdline = readFileSync(`/proc/${d}/cmdline`, 'latin1');
      } catch {
        continue; // gone already
      }
      if (!cmdline) continue; // kernel threads and zombies
      const text = cmdline.replace(/\0+$/, '').split('\0').join(' ');
      const id = `${d}\n${text}`;
      if (this.#known.has(id)) continue;
      this.#known.add(id);
      this.cmdlines.add(text);
      let comm = '';
      try {
        comm = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      } catch {
        // gone meanwhile
      }
      const p = { pid: Number(d), comm, cmdline: text };
      this.seen.push(p);
      this.onProcess?.(p);
    }
  }
}

/** A process's environment as a map, and who may read it; undefined once it is gone. */
export function readEnviron(
  pid: number,
): { env: Map<string, string>; mode: number; uid: number } | undefined {
  try {
    const st = statSync(`/proc/${pid}/environ`);
    const env = new Map<string, string>();
    for (const kv of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
      const i = kv.indexOf('=');
      if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1));
    }
    return { env, mode: st.mode & 0o777, uid: st.uid };
  } catch {
    return undefined;
  }
}
