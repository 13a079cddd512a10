// The acceptance rule of speculative decoding with an MTP draft (the verify step), as the host
// sees it: the step reads back two ids and the draft d was accepted iff ids[0] == d.
//
// Greedy drafts (temperature 0, or drafts 'greedy'): the draft is the MTP module's argmax, a point
// mass q = δ_d, for which speculative rejection sampling (accept with min(1, p(d) / q(d)) = p(d),
// else sample norm(max(0, p − q)), i.e. p without d) is exactly: the main model samples y0 after
// the current token and y1 after d, each row with its own uniform, and d is accepted iff y0 = d.
// y0 is output either way. For greedy decoding the tokens are identical to plain decoding; when
// sampling, a row draws the uniform of the token it samples, so they are identical for a seed too.
//
// Sampled drafts (temperature > 0, drafts 'sampled', the default): d is a sample of the MTP
// module's own distribution q (the main model's temperature, top-k and top-p on its logits over the
// draft vocabulary; its own uniform stream). The GPU accepts d with probability min(1, p(d) / q(d))
// and otherwise writes a sample of norm(max(0, p − q)) as ids[0] (model/speculative_verify.ts,
// kernels/speculative_accept.ref.ts), so ids[0] is a sample of p, ids[0] == d exactly when d was
// accepted (on rejection the residual is 0 at d), and on acceptance ids[1] is a sample of
// p(· | d). The output is distributed as plain sampling's, not token-identical for a seed; at
// temperature 1 far more drafts are accepted (Σ min(p, q) instead of p(argmax q)).
//
// Either way the host's rule is the same one.

export interface VerifyOutcome {
  /** Tokens to output, in order: [y0] or [d = y0, y1]. */
  tokens: number[];
  accepted: boolean;
}

export function acceptDraft(draft: number, sampled: readonly [number, number]): VerifyOutcome {
  const [y0, y1] = sampled;
  return y0 === draft ? { tokens: [y0, y1], accepted: true } : { tokens: [y0], accepted: false };
}
