/** Small formatting helpers shared by the checks. */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, min: 60_000 };

/** A pg_settings time value in milliseconds (-1 and 0 kept as they are). */
export function settingMs(setting: string, unit: string | null): number {
  const n = Number(setting);
  if (n <= 0) return n;
  return n * (UNIT_MS[unit ?? 'ms'] ?? 1);
}

/** 1000 -> "1s", 600000 -> "10min", 1500 -> "1500ms". */
export function humanMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}min`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Where a setting's value comes from, said the way an operator thinks of it. */
export function describeSource(source: string): string {
  switch (source) {
    case 'default':
      return 'the built-in default';
    case 'configuration file':
      return 'postgresql.conf or postgresql.auto.conf';
    case 'command line':
      return "the server's command line (-c)";
    case 'environment variable':
      return "the server's environment";
    case 'user':
      return 'ALTER ROLE ... SET';
    case 'database':
      return 'ALTER DATABASE ... SET';
    case 'database user':
      return 'ALTER ROLE ... IN DATABASE ... SET';
    case 'client':
      return 'the client connection';
    default:
      return source;
  }
}

/**
 * ALTER SYSTEM writes postgresql.auto.conf. The server's command line and environment override that
 * file, and ALTER ROLE/DATABASE ... SET override it for the sessions they match: a value from there
 * is not changed by ALTER SYSTEM.
 */
export function alterSystemCanChange(source: string): boolean {
  return source === 'default' || source === 'configuration file';
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
