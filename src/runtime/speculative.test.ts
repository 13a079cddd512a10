// The verify step's acceptance rule against plain sampling, on the CPU with the kernels' own
// references (sample.ref.ts, speculative_accept.ref.ts): the distribution of the first output
// token equals the main model's, whatever the draft, greedy or sampled from the MTP module's q;
// the second appears exactly when the draft was accepted; the acceptance is p(draft) for a greedy
// draft and Σ min(p, q) for a sampled one.

import { describe, expect, it } from 'vitest';
import { keptDistribution, sampleRef } from '../kernels/sample.ref.ts';
import { draftSeed, speculativeAcceptRef } from '../kernels/speculative_accept.ref.ts';
import { rng, randn, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { checkGenerateOptions } from './generate.ts';
import { acceptDraft } from './speculative.ts';

const V = 12;
const params = { temperature: 0.9, topK: 0, topP: 0.95, seed: 0, step: 0 };

/** One sample of `logits` with the kernel's uniform for (seed, step). */
function sample(logits: Float32Array, seed: number, step: number, vocab = V): number {
  return sampleRef({ rows: 1, vocab, logits, params: { ...params, seed, step } })[0];
}

/** Chi-square of `counts` against N * want over the cells expected 5+ times. */
function chiSquare(counts: number[], want: ArrayLike<number>, N: number): { chi2: number; cells: number } {
  let chi2 = 0;
  let cells = 0;
  for (let j = 0; j < want.length; j++) {
    const e = N * want[j];
    if (e < 5) continue;
    chi2 += (counts[j] - e) ** 2 / e;
    cells++;
  }
  return { chi2, cells };
}

describe('acceptDraft', () => {
  it('keeps the draft only when the main model sampled it, and then adds the second sample', () => {
    expect(acceptDraft(5, [5, 7])).toEqual({ tokens: [5, 7], accepted: true });
    expect(acceptDraft(5, [3, 7])).toEqual({ tokens: [3], accepted: false });
  });

  it('greedy drafts: outputs tokens distributed as plain sampling (chi-square over 4000 draws, drafts good and bad)', () => {
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
      const { chi2, cells } = chiSquare(counts, want0, N);
      // 99.9% quantile of chi-square with <= 11 degrees of freedom is 31.3.
      expect(chi2).toBeLessThan(31.3);
      expect(cells).toBeGreaterThan(2);
      // The acceptance rate is p(draft).
      expect(Math.abs(accepted / N - want0[draft])).toBeLessThan(4 * Math.sqrt(want0[draft] / N) + 0.01);
    }
  });

  it('sampled drafts: the first token is distributed as plain sampling, the second as plain sampling after the draft; acceptance Σ min(p, q) (chi-square, 6000 draws)', () => {
    const seed = testSeed('speculative sampled drafts');
    const next = rng(seed);
    // The main model's two rows, and an MTP module near row 0 over a draft vocabulary of 9 of the 12 ids.
    const Vd = 9;
    const p0 = randn(next, V, 0.6);
    const p1 = randn(next, V, 0.6);
    const mtp = Float32Array.from({ length: Vd }, (_, j) => p0[j] + 0.8 * randn(next, 1)[0]);
    const want0 = keptDistribution(p0, params);
    const want1 = keptDistribution(p1, params);
    const q = Float32Array.from(keptDistribution(mtp, params));
    const p = Float32Array.from(want0);
    const N = 6000;
    const first = new Array(V).fill(0);
    const second = new Array(V).fill(0);
    let accepted = 0;
    for (let s = 0; s < N; s++) {
      // The uniforms of a verify step at counter s: the draft's stream, row 0's and row 1's.
      const draft = sample(mtp, draftSeed(seed), s, Vd);
      const y0 = sample(p0, seed, s);
      const y1 = sample(p1, seed, s + 1);
      const t1 = speculativeAcceptRef({ p, q, draft, y0, seed, step: s });
      const outcome = acceptDraft(draft, [t1, y1]);
      first[outcome.tokens[0]]++;
      if (outcome.accepted) {
        accepted++;
        second[outcome.tokens[1]]++;
      }
    }
    const a = chiSquare(first, want0, N);
    expect(a.chi2, `first ${first} want ${Array.from(want0, (x) => (N * x).toFixed(0))}`).toBeLessThan(31.3);
    expect(a.cells).toBeGreaterThan(4);
    const b = chiSquare(second, want1, accepted);
    expect(b.chi2, `second ${second}`).toBeLessThan(31.3);
    expect(b.cells).toBeGreaterThan(2);
    const overlap = Array.from(q, (qj, j) => Math.min(qj, p[j])).reduce((x, y) => x + y, 0);
    expect(Math.abs(accepted / N - overlap)).toBeLessThan(4 * Math.sqrt(overlap / N) + 0.01);
  });

  it("drafts: 'sampled' by default, 'greedy' for a seeded request left to speculative 'auto' (its tokens then do not depend on the policy)", () => {
    expect(checkGenerateOptions({}).drafts).toBe('sampled');
    expect(checkGenerateOptions({ seed: 7 }).drafts).toBe('greedy');
    expect(checkGenerateOptions({ seed: 7, speculative: 'auto' }).drafts).toBe('greedy');
    expect(checkGenerateOptions({ seed: 7, speculative: true }).drafts).toBe('sampled');
    expect(checkGenerateOptions({ seed: 7, drafts: 'sampled' }).drafts).toBe('sampled');
    expect(checkGenerateOptions({ drafts: 'greedy' }).drafts).toBe('greedy');
    expect(() => checkGenerateOptions({ drafts: 'argmax' as 'greedy' })).toThrow(ArgumentError);
  });
});
