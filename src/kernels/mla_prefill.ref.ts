// CPU reference of shaders/mla_prefill.wgsl, in float64, straight from src/model/MATH.md 4.4
// "Absorbed" (official model.py MLA.forward, attn_impl = "absorb"), for a chunk of T query rows at
// positions startPos .. startPos + T - 1 whose cache rows are already written:
//
//   score[s, h, t] = (q_lat[s, h] . c_hat[t] + q_pe[s, h] . k_pe[t]) * softmax_scale
//   P = softmax_t(score)                    t = 0 .. startPos + s (the cached prefix and the chunk, causal)
//   o_lat[s, h] = sum_t P[s, h, t] * c_hat[t]
//
// model.py itself only runs multi-token calls from start_pos 0 (its mask is [T, T]); startPos > 0
// is chunked prefill, the same causal rule. This is written out on its own rather than as a call of
// mlaDecodeRef (whose rows follow the same rule) so that the test "prefill == T decode calls" checks
// two independent loops.

export interface MlaPrefillShape {
  /** Query rows of the chunk (T). */
  rows: number;
  /** num_attention_heads. */
  heads: number;
  /** kv_lora_rank (rkv). */
  kvLoraRank: number;
  /** qk_rope_head_dim (dr). */
  ropeDim: number;
}

export interface MlaPrefillRefArgs extends MlaPrefillShape {
  /** Absolute position of query row 0; row s is at startPos + s. */
  startPos: number;
  softmaxScale: number;
  /** [rows, heads, kvLoraRank]: q_nope @ W_UK. */
  qLat: Float32Array;
  /** [rows, heads, ropeDim], RoPE already applied. */
  qPe: Float32Array;
  /** [maxT, kvLoraRank + ropeDim]: row t = [c_hat(t) | k_pe(t)]; rows past startPos + rows - 1 are not read. */
  cache: Float32Array;
}

/** o_lat [rows, heads, kvLoraRank]. */
export function mlaPrefillRef(args: MlaPrefillRefArgs): Float32Array {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos, softmaxScale, qLat, qPe, cache } = args;
  const width = rkv + dr;
  const out = new Float32Array(rows * heads * rkv);
  for (let h = 0; h < heads; h++) {
    for (let s = 0; s < rows; s++) {
      const positions = startPos + s + 1;
      const qi = (s * heads + h) * rkv;
      const qpi = (s * heads + h) * dr;
      const score = new Float64Array(positions);
      for (let t = 0; t < positions; t++) {
        let dot = 0;
        for (let j = 0; j < rkv; j++) dot += qLat[qi + j] * cache[t * width + j];
        for (let j = 0; j < dr; j++) dot += qPe[qpi + j] * cache[t * width + rkv + j];
        score[t] = dot * softmaxScale;
      }
      let max = -Infinity;
      for (const v of score) max = Math.max(max, v);
      let denominator = 0;
      const o = new Float64Array(rkv);
      for (let t = 0; t < positions; t++) {
        const p = Math.exp(score[t] - max);
        denominator += p;
        for (let j = 0; j < rkv; j++) o[j] += p * cache[t * width + j];
      }
      for (let j = 0; j < rkv; j++) out[qi + j] = o[j] / denominator;
    }
  }
  return out;
}
