// Greedy tokens of two engines on the same model, compared. Both compute in float32 on the same
// dequantised weights but in another order, so their logits differ by ~1e-4: a token may differ
// only where the top two logits are that close. After the first disagreement the two continue
// different texts and are no longer comparable.

/** A difference of top-1 and top-2 logits above this is "clear": the engines must agree there. */
export const CLEAR_MARGIN = 0.01;

/** argmax (the lowest id on ties, as torch) and the top-1 minus top-2 margin of a logit row. */
export function top2(row: ArrayLike<number>): { id: number; margin: number } {
  let id = 0;
  let best = -Infinity;
  let second = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (v > best) {
      second = best;
      best = v;
      id = i;
    } else if (v > second) {
      second = v;
    }
  }
  return { id, margin: best - second };
}

export interface GreedyComparison {
  /** Tokens compared (the shorter of the two runs). */
  compared: number;
  /** Leading tokens that agree. */
  agreeing: number;
  /** Where they first differ, with the peer's margin there. */
  firstDisagreement?: { index: number; ours: number; peer: number; peerMargin: number };
  /** Every disagreement before the end falls where the peer's logits had no clear margin. */
  agreeWhereClear: boolean;
}

export function compareGreedy(ours: readonly number[], peer: readonly number[], peerMargins: readonly number[]): GreedyComparison {
  const compared = Math.min(ours.length, peer.length);
  let agreeing = 0;
  while (agreeing < compared && ours[agreeing] === peer[agreeing]) agreeing++;
  if (agreeing === compared) return { compared, agreeing, agreeWhereClear: true };
  const peerMargin = peerMargins[agreeing];
  return { compared, agreeing, firstDisagreement: { index: agreeing, ours: ours[agreeing], peer: peer[agreeing], peerMargin }, agreeWhereClear: peerMargin <= CLEAR_MARGIN };
}
