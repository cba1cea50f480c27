/**
 * Hand-made backups in a BACKUP_DIR, for faults a real pg_dump never produces on demand: a restore
 * that sleeps (to be interrupted), an object that is not gzip, one whose bytes differ from the
 * manifest's checksum, one without a manifest.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { stamp } from '../../src/backup/naming.js';
import type { Manifest } from '../../src/backup/manifest.js';

export interface CraftedBackup {
  key: string;
  path: string;
  manifest: Manifest;
}

export interface CraftOptions {
  at?: Date;
  manifest?: boolean;
  manifestOf?: Buffer;
  rowCounts?: Manifest['rowCounts'];
  /** Fields of the manifest to replace or add (a crafted manifest may be anything). */
  manifestPatch?: Record<string, unknown>;
  /** The run part of the key; unset, the key has the form of earlier releases (no run). */
  run?: string;
}

/**
 * A backup made by hand: the key `<database>/<database>_<stamp>.sql.gz` (the raw name, as earlier
 * releases wrote it), the bytes (SQL text is gzipped; a Buffer is taken as it is), and a version 1
 * manifest with the size and SHA-256 of `manifestOf` (default: the bytes).
 */
export function craftBackup(
  database: string,
  data: string | Buffer,
  opts: CraftOptions = {},
): { key: string; bytes: Buffer; manifest: Manifest; manifestText: string } {
  const at = opts.at ?? new Date();
  const key = `${database}/${database}_${stamp(at)}${opts.run ? `-${opts.run}` : ''}.sql.gz`;
  const bytes = typeof data === 'string' ? gzipSync(data) : data;
  const described = opts.manifestOf ?? bytes;
  const manifest = {
    manifestVersion: 1,
    key,
    database,
    format: 'plain',
    compression: { algorithm: 'gzip', level: 6, members: 1 },
    size: described.length,
    sha256: createHash('sha256').update(described).digest('hex'),
    pgDumpVersion: '17.0',
    serverVersion: '17.0',
    serverVersionNum: 170000,
    startedAt: at.toISOString(),
    finishedAt: at.toISOString(),
    durationSeconds: 0.1,
    rowCounts: opts.rowCounts ?? {},
    tool: 'test',
    ...opts.manifestPatch,
  } as Manifest;
  return { key, bytes, manifest, manifestText: JSON.stringify(manifest, null, 2) };
}

/** Writes a crafted backup (see craftBackup) into a BACKUP_DIR, its manifest too unless `manifest` is false. */
export function writeBackup(
  dir: string,
  database: string,
  data: string | Buffer,
  opts: CraftOptions = {},
): CraftedBackup {
  const { key, bytes, manifest, manifestText } = craftBackup(database, data, opts);
  const path = join(dir, key);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, bytes);
  if (opts.manifest !== false) writeFileSync(`${path}.manifest.json`, manifestText);
  return { key, path, manifest };
}

/** A plain-format script that creates `table`, then sleeps `seconds` inside the restore's transaction. */
export function slowRestoreSql(table: string, seconds: number): string {
  return [
    'SET statement_timeout = 0;',
    `CREATE TABLE public.${table} (id integer);`,
    `INSERT INTO public.${table} SELECT generate_series(1, 10);`,
    `SELECT pg_sleep(${seconds});`,
    '',
  ].join('\n');
}

/** pg_dump processes on this machine whose environment holds every one of `env` (PGDATABASE, PGPORT...). */
export function pgDumpPids(env: Record<string, string | number>): number[] {
  const wanted = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'pg_dump') return false;
        const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        return wanted.every((w) => environ.includes(w));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Processes whose parent is `pid` (from /proc), with their command names. */
export function childProcesses(pid: number): Array<{ pid: number; comm: string }> {
  const out: Array<{ pid: number; comm: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const [state, ppid] = stat.slice(close + 2).split(' ');
      if (Number(ppid) === pid && state !== 'Z') out.push({ pid: Number(entry), comm });
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Whether a process is still alive (not gone, not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
