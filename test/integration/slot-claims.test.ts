// Slot claims in a real backup directory, read as a hostile writer of the store could leave them:
// one winner per slot among racers, and a planted claim stops a run only when it could be a real
// one (this cluster, this slot, written once the slot came, signed when signing is on).
import { rmSync, utimesSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { claimKey, claimSlot, type ClaimOptions, type ClaimRequest } from '../../src/backup/claim.js';
import { Signer } from '../../src/backup/signing.js';
import { FsStorage } from '../../src/backup/storage/fs.js';
import { tempDir } from '../support/temp.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function store(signer?: Signer): ClaimOptions & { root: string } {
  const root = tempDir('pgmaintd-claims-');
  dirs.push(root);
  return { root, storage: new FsStorage(root), signer, clockToleranceMs: 60_000 };
}

const slot = new Date(Math.floor(Date.now() / 1000) * 1000);
const req = (over: Partial<ClaimRequest> = {}): ClaimRequest => ({
  database: 'app',
  slot,
  role: 'standby',
  systemIdentifier: '7312345678901234567',
  runId: 'r1',
  ...over,
});

/** Writes a claim as a writer of the store would, dated (mtime) `writtenAt`. */
function plant(root: string, content: string, writtenAt = new Date()) {
  const path = join(root, claimKey('app', slot));
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  utimesSync(path, writtenAt, writtenAt);
}

const claimText = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    claimVersion: 1,
    database: 'app',
    slot: slot.toISOString(),
    claimedAt: new Date().toISOString(),
    holder: 'planted',
    role: 'primary',
    systemIdentifier: '7312345678901234567',
    ...over,
  });

describe('slot claims', () => {
  it('of ten racers for one slot exactly one wins; the others are told who', async () => {
    const s = store();
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, (_, i) => claimSlot(s, req({ runId: `r${i}` }))),
    );
    const winners = outcomes.filter((o) => o.won);
    expect(winners).toHaveLength(1);
    for (const o of outcomes.filter((x) => !x.won))
      expect(o.won === false && o.claim.holder).toMatch(/pid \d+ run r\d/);
    // another slot is a claim of its own
    expect((await claimSlot(s, req({ slot: new Date(slot.getTime() + 60_000) }))).won).toBe(true);
  });

  it('a claim that could be a real one is obeyed', async () => {
    const s = store();
    plant(s.root, claimText());
    const o = await claimSlot(s, req());
    expect(o).toMatchObject({ won: false, claim: { holder: 'planted' } });
  });

  it.each([
    ['malformed', 'not json', 'malformed'],
    ['for another slot', claimText({ slot: new Date(slot.getTime() - 60_000).toISOString() }), 'malformed'],
    ['with an unknown field', claimText({ extra: 1 }), 'malformed'],
    ['from another cluster', claimText({ systemIdentifier: '1' }), 'other_cluster'],
    [
      'dated ahead of the store',
      claimText({ claimedAt: new Date(Date.now() + 3_600_000).toISOString() }),
      'future_dated',
    ],
  ])('a claim %s is ignored: the run goes on', async (_what, content, reason) => {
    const s = store();
    plant(s.root, content);
    expect(await claimSlot(s, req())).toMatchObject({ won: true, ignored: reason });
  });

  it('a claim planted before its slot came is ignored (claims for future slots stop nothing)', async () => {
    const s = store();
    plant(s.root, claimText(), new Date(slot.getTime() - 3_600_000));
    expect(await claimSlot(s, req())).toMatchObject({ won: true, ignored: 'premature' });
  });

  it('with a signing key, only a claim signed with it is obeyed', async () => {
    const signer = new Signer([Buffer.alloc(32, 7)]);
    const s = store(signer);
    plant(s.root, claimText());
    expect(await claimSlot(s, req())).toMatchObject({ won: true, ignored: 'unsigned' });

    const t = store(signer);
    expect((await claimSlot(t, req({ runId: 'a' }))).won).toBe(true);
    expect(await claimSlot(t, req({ runId: 'b' }))).toMatchObject({ won: false });
  });
});
