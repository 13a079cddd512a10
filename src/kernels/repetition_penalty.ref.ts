// CPU reference of shaders/repetition_penalty.wgsl: Hugging Face's RepetitionPenaltyLogitsProcessor,
//   score = gather(logits, ids); score = where(score < 0, score * penalty, score / penalty); scatter
// which penalises each distinct id once. Written here as logit > 0 ? logit / p : logit * p, the
// same values (a zero stays zero, -0 stays -0, NaN stays NaN). In f32, as torch computes it on a
// float32 tensor: the penalty rounded to f32, each result rounded to f32 (the double quotient or
// product rounded to f32 is the correctly rounded f32 result).

import { ArgumentError } from '../errors.ts';

/** The logits [rows, vocab] with the penalty applied to every distinct id of `ids`, in a new array. */
export function repetitionPenaltyRef(logits: Float32Array, rows: number, vocab: number, ids: Iterable<number>, penalty: number): Float32Array {
  if (logits.length !== rows * vocab) throw new ArgumentError(`repetitionPenaltyRef: ${logits.length} logits, rows=${rows} vocab=${vocab}`);
  const out = Float32Array.from(logits);
  const p = Math.fround(penalty);
  for (const id of new Set(ids)) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new ArgumentError(`repetitionPenaltyRef: token id ${id} is outside the vocabulary [0, ${vocab})`);
    }
    for (let r = 0; r < rows; r++) {
      const x = logits[r * vocab + id];
      out[r * vocab + id] = x > 0 ? x / p : x * p;
    }
  }
  return out;
}
