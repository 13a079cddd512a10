// The acceptance rule of speculative decoding with a greedy MTP draft (the verify step).
//
// The main model samples y0 after the current token and y1 after the draft d, each row with its
// own uniform. The draft is the MTP module's argmax, a point mass q = δ_d, for which speculative
// rejection sampling (accept with min(1, p(d) / q(d)) = p(d), else sample norm(max(0, p − q)), i.e.
// p without d) is exactly: accept iff y0 = d, and output y0 either way. So the first token is
// always a sample of p, the second (on acceptance) a sample of p(· | d): the output distribution
// is that of plain sampling, and for greedy decoding the tokens are identical to plain decoding.

export interface VerifyOutcome {
  /** Tokens to output, in order: [y0] or [d = y0, y1]. */
  tokens: number[];
  accepted: boolean;
}

export function acceptDraft(draft: number, sampled: readonly [number, number]): VerifyOutcome {
  const [y0, y1] = sampled;
  return y0 === draft ? { tokens: [y0, y1], accepted: true } : { tokens: [y0], accepted: false };
}
