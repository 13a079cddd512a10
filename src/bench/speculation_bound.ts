// The ceiling of what MTP speculation can gain at batch 1 (issue 17): a verify step runs two rows,
// and while the rows share every dense weight, each reads its own routed experts. With acceptance
// a (tokens per verify step 1 + a), the routed experts' share r of the bytes a token reads, and
// the overlap o of the two rows' expert sets, a step that reads each weight once costs
// 1 + r(1 - o) plain steps on a bandwidth-bound GPU (the same count of decoded weights on an
// instruction-bound CPU adapter), so tokens/s rise at most by
//
//   bound = (1 + a) / (1 + r (1 - o))
//
// The MTP layer's own cost is left out: the bound is the most a verify step could give.

import type { TokenExperts } from '../runtime/types.ts';

export interface SpeculationBound {
  /** Drafts accepted over drafts verified, measured. */
  acceptance: number;
  /** Routed experts' bytes over all the bytes one decode token reads (from the checkpoint's tensors). */
  routed_share: number;
  /** Experts two consecutive tokens share, over num_experts_per_tok, averaged over tokens and MoE layers (measured). */
  overlap: number;
  /** (1 + acceptance) / (1 + routed_share (1 - overlap)). */
  bound: number;
  /** The measured speed-up over plain decoding, beside it. */
  measured_speedup: number;
}

/**
 * The mean share of experts a token has in common with the one before it, per MoE layer: what
 * the two rows of a verify step (a token and the draft after it) share.
 */
export function consecutiveOverlap(tokens: readonly TokenExperts[]): number {
  let shared = 0;
  let chosen = 0;
  for (let i = 1; i < tokens.length; i++) {
    const prev = tokens[i - 1].experts;
    tokens[i].experts.forEach((ids, layer) => {
      const before = new Set(prev[layer] ?? []);
      for (const id of ids) if (before.has(id)) shared++;
      chosen += ids.length;
    });
  }
  return chosen === 0 ? 0 : shared / chosen;
}

export function speculationBound(acceptance: number, routedShare: number, overlap: number, measuredSpeedup: number): SpeculationBound {
  return {
    acceptance,
    routed_share: routedShare,
    overlap,
    bound: (1 + acceptance) / (1 + routedShare * (1 - overlap)),
    measured_speedup: measuredSpeedup,
  };
}
