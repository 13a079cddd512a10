// CPU reference of shaders/speculative_accept.wgsl: the acceptance rule of speculative sampling
// (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding", alg. 1;
// Chen et al. 2023, "Accelerating LLM Decoding with Speculative Sampling", alg. 2) for one draft.
//
// The draft d was sampled from the MTP module's distribution q (over its draft vocabulary; 0
// beyond it); p is the main model's row-0 distribution (both after temperature, top-k, top-p and,
// for p, the grammar's mask: the sampler's kept distributions, sample.ref.ts). Then
//   accept d            with probability min(1, p(d) / q(d))   (u_accept * q(d) < p(d))
//   else output a sample of norm(max(0, p - q))                (inverse CDF with u_residual)
// and the output is distributed as p, whatever q. Where p <= q everywhere by rounding (no residual
// mass), the sampler's own sample y0 of p stands. Each decision has its own uniform stream,
// independent of the main model's rows and of the draft's (sample.ref.ts sampleUniform, with the
// request's seed xor a salt), keyed by the index of the token decided (the step).

import { sampleUniform } from './sample.ref.ts';

/** Seed salts of the streams speculation draws from, beside the main model's (the seed itself). */
export const DRAFT_SALT = 0x64726674; // 'drft': the MTP module's draft samples
export const ACCEPT_SALT = 0x61636370; // 'accp': accept or reject
export const RESIDUAL_SALT = 0x72657364; // 'resd': the sample of the residual on rejection

/** The seed of a request's draft stream (the MTP module samples its drafts with it). */
export function draftSeed(seed: number): number {
  return (seed ^ DRAFT_SALT) >>> 0;
}

export interface SpeculativeAcceptInput {
  /** [vocab] p: the main model's row-0 kept distribution. */
  p: ArrayLike<number>;
  /** [draftVocab] q: the MTP module's kept distribution the draft was sampled from. */
  q: ArrayLike<number>;
  draft: number;
  /** The sampler's sample of p (row 0's uniform); kept where the residual has no mass, and as NON_FINITE_ID. */
  y0: number;
  seed: number;
  step: number;
}

/** The token the step outputs first: the draft when accepted (the caller then outputs row 1 too), else a sample of the residual. */
export function speculativeAcceptRef({ p, q, draft, y0, seed, step }: SpeculativeAcceptInput): number {
  if (y0 >= p.length) return y0; // NON_FINITE_ID: the host stops on it
  const pd = draft < p.length ? p[draft] : 0;
  const qd = draft < q.length ? q[draft] : 0;
  if (Math.fround(sampleUniform((seed ^ ACCEPT_SALT) >>> 0, step, 0) * qd) < pd) return draft;
  // Each element as the kernel computes it in f32 (the sums then differ by rounding only).
  const residual = Float64Array.from({ length: p.length }, (_, j) => Math.max(0, Math.fround(p[j] - (j < q.length ? q[j] : 0))));
  let total = 0;
  for (const r of residual) total += r;
  if (!(total > 0)) return y0;
  const goal = sampleUniform((seed ^ RESIDUAL_SALT) >>> 0, step, 0) * total;
  let run = 0;
  let last = -1;
  for (let j = 0; j < residual.length; j++) {
    if (residual[j] <= 0) continue;
    run += residual[j];
    last = j;
    if (run > goal) return j;
  }
  return last; // rounding past the end: the last token with residual mass
}
