import { describe, expect, it } from 'vitest';
import { CLEAR_MARGIN, compareGreedy, top2 } from './peer_compare.ts';

describe('top2', () => {
  it('takes the lowest id on a tie and measures the gap to the runner-up', () => {
    expect(top2([1, 5, 2, 5, -3])).toEqual({ id: 1, margin: 0 });
    expect(top2([-2, -1.5, -7])).toEqual({ id: 1, margin: 0.5 });
    expect(top2([3, 1, 2])).toEqual({ id: 0, margin: 1 });
  });
});

describe('compareGreedy', () => {
  it('agrees to the end', () => {
    expect(compareGreedy([4, 5, 6], [4, 5, 6, 7], [1, 1, 1, 1])).toEqual({ compared: 3, agreeing: 3, agreeWhereClear: true });
  });
  it('reports the first disagreement with the peer margin there', () => {
    const c = compareGreedy([4, 5, 9, 1], [4, 5, 6, 7], [1, 1, CLEAR_MARGIN / 2, 1]);
    expect(c).toEqual({ compared: 4, agreeing: 2, firstDisagreement: { index: 2, ours: 9, peer: 6, peerMargin: CLEAR_MARGIN / 2 }, agreeWhereClear: true });
  });
  it('fails a disagreement where the peer had a clear margin', () => {
    expect(compareGreedy([8], [6], [0.5]).agreeWhereClear).toBe(false);
  });
});
