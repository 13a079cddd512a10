// The batch-1 ceiling of speculation: issue 17's formula, and the overlap it takes from routing.

import { describe, expect, it } from 'vitest';
import { consecutiveOverlap, speculationBound } from './speculation_bound.ts';

describe('speculationBound', () => {
  it('is (1 + a) / (1 + r (1 - o))', () => {
    // DeepSeek-V3 as the issue puts it: r = 0.55, a = 0.85, no overlap: ~1.19x.
    expect(speculationBound(0.85, 0.55, 0, 1).bound).toBeCloseTo(1.85 / 1.55, 12);
    // Rows that share every expert read no more than one row: the bound is 1 + a.
    expect(speculationBound(0.6, 0.4, 1, 1).bound).toBeCloseTo(1.6, 12);
    // A dense model (r = 0) likewise.
    expect(speculationBound(0.7, 0, 0.3, 1.2)).toEqual({ acceptance: 0.7, routed_share: 0, overlap: 0.3, bound: 1.7, measured_speedup: 1.2 });
  });
});

describe('consecutiveOverlap', () => {
  it('counts the experts each token shares with the one before, per layer', () => {
    const tokens = [
      { token: 1, experts: [[0, 1], [4, 5]] },
      { token: 2, experts: [[1, 2], [4, 5]] }, // layer 0: 1 of 2 shared; layer 1: 2 of 2
      { token: 3, experts: [[3, 6], [5, 9]] }, // layer 0: 0; layer 1: 1 (5)
    ];
    expect(consecutiveOverlap(tokens)).toBeCloseTo((1 + 2 + 0 + 1) / 8, 12);
    expect(consecutiveOverlap(tokens.slice(0, 1))).toBe(0);
    expect(consecutiveOverlap([])).toBe(0);
  });
});
