/**
 * A hand-made PITR store in a directory (FsStorage): WAL segments, partials and history files stored
 * the way the archiver stores them (putWalFile/putPartial; their bytes are never parsed, so a few
 * bytes stand for a segment), and base backups with a manifest of the valid schema (1 MiB segments,
 * so positions stay small) over a data object of matching size. Object times (the store's
 * lastModified) are set by file modification time.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, statSync, utimesSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { BaseManifest } from '../../src/pitr/base-manifest.js';
import type { Signer } from '../../src/backup/signing.js';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { BASE_MANIFEST_SUFFIX, baseKey } from '../../src/pitr/store-keys.js';
import { putPartial, putWalFile } from '../../src/pitr/wal-object.js';
import { formatLsn, historyName, segmentName } from '../../src/pitr/wal-name.js';
import { tempDir } from './temp.js';

export const SEG = 1 << 20;
export const DAY = 86_400_000;
export const SYSID = '7301234567890123456';

/** A position inside segment `segNo` (1 MiB segments). */
export const lsnIn = (segNo: number, offset = 0x28) =>
  formatLsn(BigInt(segNo) * BigInt(SEG) + BigInt(offset));
export const seg = (tli: number, segNo: number) => segmentName(tli, BigInt(segNo), SEG);

export interface BaseOptions {
  /** When it became consistent (the manifest's stopDatabaseTime). */
  consistentAt: Date;
  timeline?: number;
  startSeg: number;
  stopSeg?: number;
  /** Sign with this signer (default: the store's). */
  signer?: Signer | undefined;
  /** Leave the manifest unsigned even when the store signs. */
  unsigned?: boolean;
  /** No manifest at all (an unfinished run). */
  noManifest?: boolean;
  /** The WAL segment size the manifest states (default 1 MiB). */
  segmentBytes?: number;
}

export class CraftedPitrStore {
  readonly dir = tempDir('pgmaintd-pitr-');
  readonly storage = new FsStorage(this.dir);
  readonly sysid = SYSID;

  constructor(readonly signer?: Signer) {}

  private get ws() {
    return { storage: this.storage, sysid: this.sysid, ...(this.signer ? { signer: this.signer } : {}) };
  }

  async segment(tli: number, segNo: number, at?: Date): Promise<string> {
    const r = await putWalFile(this.ws, seg(tli, segNo), Buffer.from(`wal ${tli} ${segNo}`));
    if (at) this.touch(r.key, at);
    return r.key;
  }

  async segments(tli: number, from: number, to: number, at?: (segNo: number) => Date): Promise<void> {
    for (let n = from; n <= to; n++) await this.segment(tli, n, at?.(n));
  }

  async partial(tli: number, segNo: number, validBytes: number, at?: Date): Promise<string> {
    const r = await putPartial(
      this.ws,
      seg(tli, segNo),
      Buffer.from(`partial ${tli} ${segNo} ${validBytes}`),
      validBytes,
    );
    if (at) this.touch(r.key, at);
    return r.key;
  }

  /** The history file of `tli`: each earlier timeline and the segment where its successor branched off. */
  async history(tli: number, switches: Array<{ parent: number; atSeg: number }>): Promise<string> {
    const text = switches
      .map((s) => `${s.parent}\t${lsnIn(s.atSeg, 0x100)}\tno recovery target specified`)
      .join('\n');
    return (await putWalFile(this.ws, historyName(tli), Buffer.from(`${text}\n`))).key;
  }

  async base(o: BaseOptions): Promise<{ key: string; manifest: BaseManifest }> {
    const at = o.consistentAt;
    const key = baseKey(this.sysid, at, randomBytes(4).toString('hex'));
    const data = `base backup ${key}`;
    await this.storage.putSmall(key, data);
    const stopSeg = o.stopSeg ?? o.startSeg;
    const started = new Date(at.getTime() - 60_000);
    const timeline = o.timeline ?? 1;
    let manifest: BaseManifest = {
      manifestVersion: 1,
      kind: 'basebackup',
      key,
      systemIdentifier: this.sysid,
      timeline,
      startLsn: lsnIn(o.startSeg),
      stopLsn: lsnIn(stopSeg, 0x200),
      startWalFile: seg(timeline, o.startSeg),
      stopWalFile: seg(timeline, stopSeg),
      segmentBytes: o.segmentBytes ?? SEG,
      startDatabaseTime: started.toISOString(),
      stopDatabaseTime: at.toISOString(),
      startedAt: started.toISOString(),
      finishedAt: at.toISOString(),
      durationSeconds: 60,
      serverVersion: '15.10',
      serverVersionNum: 150010,
      pgBasebackupVersion: 'pg_basebackup (PostgreSQL) 15.10',
      format: 'tar',
      compression: { algorithm: 'gzip', level: 6, members: 1 },
      size: Buffer.byteLength(data),
      sha256: createHash('sha256').update(data).digest('hex'),
      rawBytes: 1000,
      pgBackupManifest: { bytes: 100, sha256: createHash('sha256').update('m').digest('hex') },
      trigger: 'schedule',
      tool: 'test',
    };
    const signer = o.signer ?? this.signer;
    if (signer && !o.unsigned) manifest = signer.sign(manifest);
    if (!o.noManifest) await this.storage.putSmall(key + BASE_MANIFEST_SUFFIX, JSON.stringify(manifest));
    return { key, manifest };
  }

  touch(key: string, at: Date): void {
    utimesSync(join(this.dir, key), at, at);
  }

  /** Every stored key, sorted. */
  keys(): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (statSync(p).isFile() && !e.name.startsWith('.')) out.push(relative(this.dir, p));
      }
    };
    walk(this.dir);
    return out.sort();
  }
}

export const daysAgo = (d: number, from = Date.now()) => new Date(Math.floor((from - d * DAY) / 1000) * 1000);
