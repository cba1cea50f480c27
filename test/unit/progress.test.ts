// Progress of long work: the percentage (never 100 before done) and the time left (only once the
// rate means something), and how a person reads them on a terminal.
import { describe, expect, it } from 'vitest';
import { estimateProgress } from '../../src/backup/progress.js';
import { humanMessage } from '../../src/log/logger.js';

describe('estimateProgress', () => {
  it('no total, no percentage', () => {
    expect(estimateProgress(500, undefined, 10_000)).toEqual({});
    expect(estimateProgress(500, 0, 10_000)).toEqual({});
  });

  it('a percentage with one decimal, and the time left at the rate so far', () => {
    expect(estimateProgress(250, 1000, 10_000)).toEqual({ percent: 25, etaSeconds: 30 });
    expect(estimateProgress(1, 3, 6000)).toEqual({ percent: 33.3, etaSeconds: 12 });
  });

  it('no time left before enough is done or enough time passed', () => {
    expect(estimateProgress(5, 1000, 60_000)).toEqual({ percent: 0.5 });
    expect(estimateProgress(500, 1000, 1000)).toEqual({ percent: 50 });
  });

  it('never 100 % (nor more) while running, and no time left once past an estimated total', () => {
    expect(estimateProgress(999, 1000, 60_000)).toEqual({ percent: 99, etaSeconds: 1 });
    expect(estimateProgress(1000, 1000, 60_000)).toEqual({ percent: 99 });
    expect(estimateProgress(5000, 1000, 60_000)).toEqual({ percent: 99 });
  });
});

describe('the progress line on a terminal', () => {
  it('says how far, "about" for an estimated total, and the time left', () => {
    expect(
      humanMessage({ msg: 'backup progress', percent: 42, etaSeconds: 120, estimate: true }, 'msg'),
    ).toBe('backup progress: about 42%, about 2 min left');
    expect(humanMessage({ msg: 'restore progress', percent: 7.5 }, 'msg')).toBe('restore progress: 7.5%');
    expect(humanMessage({ msg: 'restore progress', percent: 50, etaSeconds: 9000 }, 'msg')).toBe(
      'restore progress: 50%, about 2.5 h left',
    );
    expect(humanMessage({ msg: 'backup started' }, 'msg')).toBe('backup started');
  });
});
