// CPU reference of shaders/mla_decode.wgsl (+ shaders/mla_decode_reduce.wgsl past one split), in float64:
// MLA decode attention over the latent cache with W_UK absorbed into the query
// (src/model/MATH.md 4.4 "Absorbed"; official model.py MLA.forward, attn_impl = "absorb"):
//
//   score[r, h, t] = (q_lat[r, h] . c_hat[t] + q_pe[r, h] . k_pe[t]) * softmax_scale
//   P = softmax_t(score)                    t = 0 .. start_pos + r (causal)
//   o_lat[r, h] = sum_t P[r, h, t] * c_hat[t]
//
// W_UV (o = W_UV[h] @ o_lat) and o_proj are applied afterwards by the matmul kernels.

export interface MlaDecodeShape {
  /** Query rows: 1 for a decode step, 2 for the MTP verify step. */
  rows: number;
  /** num_attention_heads. */
  heads: number;
  /** kv_lora_rank (rkv). */
  kvLoraRank: number;
  /** qk_rope_head_dim (dr). */
  ropeDim: number;
}

export interface MlaDecodeRefArgs extends MlaDecodeShape {
  /** Absolute position of query row 0; row r is at startPos + r. */
  startPos: number;
  softmaxScale: number;
  /** [rows, heads, kvLoraRank] */
  qLat: Float32Array;
  /** [rows, heads, ropeDim], RoPE already applied. */
  qPe: Float32Array;
  /** [maxT, kvLoraRank + ropeDim]: row t = [c_hat(t) | k_pe(t)]; rows past the context are not read. */
  cache: Float32Array;
}

/** o_lat [rows, heads, kvLoraRank]. */
export function mlaDecodeRef(args: MlaDecodeRefArgs): Float32Array {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos, softmaxScale, qLat, qPe, cache } = args;
  const width = rkv + dr;
  const out = new Float32Array(rows * heads * rkv);
  for (let r = 0; r < rows; r++) {
    const context = startPos + r + 1;
    for (let h = 0; h < heads; h++) {
      const q = (r * heads + h) * rkv;
      const qp = (r * heads + h) * dr;
      const scores = new Float64Array(context);
      let max = -Infinity;
      for (let t = 0; t < context; t++) {
        let dot = 0;
        for (let j = 0; j < rkv; j++) dot += qLat[q + j] * cache[t * width + j];
        for (let j = 0; j < dr; j++) dot += qPe[qp + j] * cache[t * width + rkv + j];
        scores[t] = dot * softmaxScale;
        max = Math.max(max, scores[t]);
      }
      let sum = 0;
      for (let t = 0; t < context; t++) {
        scores[t] = Math.exp(scores[t] - max);
        sum += scores[t];
      }
      const acc = new Float64Array(rkv);
      for (let t = 0; t < context; t++) {
        for (let j = 0; j < rkv; j++) acc[j] += scores[t] * cache[t * width + j];
      }
      for (let j = 0; j < rkv; j++) out[q + j] = acc[j] / sum;
    }
  }
  return out;
}
