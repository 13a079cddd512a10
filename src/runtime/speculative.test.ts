// The verify step's acceptance rule against plain sampling, on the CPU with the sampler's own
// distributions (sample.ref.ts): the distribution of the first output token equals the main
// model's, whatever the draft, and the second appears exactly when the draft was sampled.

import { describe, expect, it } from 'vitest';
import { keptDistribution, sampleRef } from '../kernels/sample.ref.ts';
import { rng, randn, testSeed } from '../gpu/testing.ts';
import { acceptDraft } from './speculative.ts';

const V = 12;
const params = { temperature: 0.9, topK: 0, topP: 0.95, seed: 0, step: 0 };

/** One sample of row `row` of `logits` with the kernel's uniform for (seed, step, row). */
function sample(logits: Float32Array, seed: number, step: number): number {
  return sampleRef({ rows: 1, vocab: V, logits, params: { ...params, seed, step } })[0];
}

describe('acceptDraft', () => {
  it('keeps the draft only when the main model sampled it, and then adds the second sample', () => {
    expect(acceptDraft(5, [5, 7])).toEqual({ tokens: [5, 7], accepted: true });
    expect(acceptDraft(5, [3, 7])).toEqual({ tokens: [3], accepted: false });
  });

  it('outputs tokens distributed as plain sampling (chi-square over 4000 draws, drafts good and bad)', () => {
    const next = rng(testSeed('speculative acceptance'));
    const p0 = randn(next, V, 0.5); // a spread distribution: most tokens are expected 5+ times
    const p1 = randn(next, V, 0.5);
    const want0 = keptDistribution(p0, params);
    for (const draft of [Array.from(want0).indexOf(Math.max(...want0)), 3]) {
      const N = 4000;
      const counts = new Array(V).fill(0);
      let accepted = 0;
      for (let s = 0; s < N; s++) {
        const outcome = acceptDraft(draft, [sample(p0, 11, 2 * s), sample(p1, 11, 2 * s + 1)]);
        counts[outcome.tokens[0]]++;
        if (outcome.accepted) accepted++;
        expect(outcome.tokens.length).toBe(outcome.accepted ? 2 : 1);
      }
      let chi2 = 0;
      let cells = 0;
      for (let j = 0; j < V; j++) {
        const e = N * want0[j];
        if (e < 5) continue;
        chi2 += (counts[j] - e) ** 2 / e;
        cells++;
      }
      // 99.9% quantile of chi-square with <= 11 degrees of freedom is 31.3.
      expect(chi2).toBeLessThan(31.3);
      expect(cells).toBeGreaterThan(2);
      // The acceptance rate is p(draft).
      expect(Math.abs(accepted / N - want0[draft])).toBeLessThan(4 * Math.sqrt(want0[draft] / N) + 0.01);
    }
  });
});
