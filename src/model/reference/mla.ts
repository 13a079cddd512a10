// Multi-head latent attention, CPU reference (src/model/MATH.md 4.3 and 4.4; official
// inference/model.py MLA.forward). The cache holds, per layer and position, the latent c_hat
// (after kv_a_layernorm) and the shared RoPE key k_pe (after RoPE): kv_lora_rank +
// qk_rope_head_dim values. Both attention forms read only that cache:
//   absorbed (official default): q_lat = q_nope W_UK, scores against c_hat, W_UV after the sum;
//   naive: k_nope and v are expanded from c_hat with kv_b_proj (what the naive path caches).

import type { DeepseekV3Config } from '../../config.ts';
import { ropeRef } from '../../kernels/rope_yarn.ref.ts';
import { linear, rmsNorm, roundInput, type ActRounding } from './ops.ts';
import type { ReferenceWeights } from './tensors.ts';

export type AttentionForm = 'absorbed' | 'naive';

/** One layer's latent cache: row p holds position p. */
export interface ReferenceLayerCache {
  /** [rows][kv_lora_rank] c_hat, after kv_a_layernorm. */
  readonly cKv: Float32Array[];
  /** [rows][qk_rope_head_dim] k_pe, after RoPE. */
  readonly kPe: Float32Array[];
}

/** The latent KV cache of every layer it has seen, and how many positions it holds. */
export class ReferenceLatentCache {
  /** Positions cached so far: the next token sits at position `length`. */
  length = 0;
  private readonly layers = new Map<number, ReferenceLayerCache>();

  layer(index: number): ReferenceLayerCache {
    let entry = this.layers.get(index);
    if (!entry) this.layers.set(index, (entry = { cKv: [], kPe: [] }));
    return entry;
  }
}

export interface MlaArgs {
  weights: ReferenceWeights;
  config: DeepseekV3Config;
  layer: number;
  /** [T, hidden_size] the attention input, RMSNorm(h; input_layernorm). */
  x: Float32Array;
  /** Absolute positions of the T rows: cache.kPe.length .. + T-1. */
  positions: Uint32Array;
  /** This layer's cache; the T new rows are appended to it. */
  cache: ReferenceLayerCache;
  /** [qk_rope_head_dim / 2] YaRN inverse frequencies (kernels/rope_tables.ts ropeInvFreq). */
  invFreq: Float32Array;
  form: AttentionForm;
  /**
   * W8A8: each FP8 Linear's input rounded first, x with `plain` for q_a_proj / kv_a_proj_with_mqa
   * and with `parallel` for q_proj, the others with `parallel` (kv_b_proj in the naive form only:
   * the absorbed one multiplies the dequantised weight). null or absent: weight-only.
   */
  rounding?: ActRounding | null;
}

/** [T, hidden_size] the attention output (after o_proj). Row s attends to positions 0 .. positions[s]. */
export function mla({ weights, config: c, layer, x, positions, cache, invFreq, form, rounding = null }: MlaArgs): Float32Array {
  const T = positions.length;
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const dn = c.qk_nope_head_dim;
  const dr = c.qk_rope_head_dim;
  const dq = c.qk_head_dim;
  const rkv = c.kv_lora_rank;
  const eps = c.rms_norm_eps;
  const w = (name: string) => weights.get(`model.layers.${layer}.self_attn.${name}.weight`);

  // q [T, H * dq], head-major; per head the first dn are q_nope, the last dr q_pe
  const plain = rounding?.plain ?? null;
  const parallel = rounding?.parallel ?? null;
  const xPlain = roundInput(x, T, d, plain); // q_a_proj and kv_a_proj_with_mqa
  let q: Float32Array;
  if (c.q_lora_rank === null) {
    q = linear(roundInput(x, T, d, parallel), T, w('q_proj'), H * dq, d);
  } else {
    const qLatent = rmsNorm(linear(xPlain, T, w('q_a_proj'), c.q_lora_rank, d), T, c.q_lora_rank, w('q_a_layernorm'), eps);
    q = linear(roundInput(qLatent, T, c.q_lora_rank, parallel), T, w('q_b_proj'), H * dq, c.q_lora_rank);
  }
  ropeRef(q, { rows: T, heads: H, ropeDim: dr, rowStride: H * dq, headStride: dq, ropeOffset: dn }, positions, invFreq);

  // kv [T, rkv + dr]: the latent c, then the one RoPE key shared by all heads
  const kv = linear(xPlain, T, w('kv_a_proj_with_mqa'), rkv + dr, d);
  ropeRef(kv, { rows: T, heads: 1, ropeDim: dr, rowStride: rkv + dr, headStride: 0, ropeOffset: rkv }, positions, invFreq);
  const cHat = rmsNorm(kv, T, rkv, w('kv_a_layernorm'), eps, { stride: rkv + dr, offset: 0 }); // [T, rkv]
  for (let t = 0; t < T; t++) {
    if (positions[t] !== cache.kPe.length) throw new RangeError(`mla: layer ${layer} row ${t} is at position ${positions[t]}, but the cache holds ${cache.kPe.length} rows`);
    cache.cKv.push(cHat.slice(t * rkv, (t + 1) * rkv));
    cache.kPe.push(kv.slice(t * (rkv + dr) + rkv, (t + 1) * (rkv + dr)));
  }

  const wkvB = w('kv_b_proj'); // [H * (dn + dv), rkv]: per head W_UK [dn, rkv] then W_UV [dv, rkv]
  const o = form === 'absorbed' ? absorbedAttention(c, q, positions, cache, wkvB) : naiveAttention(c, q, positions, cache, wkvB, parallel);
  return linear(roundInput(o, T, H * c.v_head_dim, parallel), T, w('o_proj'), d, H * c.v_head_dim);
}

/** Softmax over scores[0 .. n-1] in place (max subtracted; official: float32 softmax). */
function softmax(scores: Float64Array, n: number): void {
  let max = -Infinity;
  for (let t = 0; t < n; t++) max = Math.max(max, scores[t]);
  let sum = 0;
  for (let t = 0; t < n; t++) sum += scores[t] = Math.exp(scores[t] - max);
  for (let t = 0; t < n; t++) scores[t] /= sum;
}

/** o [T, H * dv] with W_UK absorbed into the query and W_UV applied after the weighted sum. */
function absorbedAttention(c: DeepseekV3Config, q: Float32Array, positions: Uint32Array, cache: ReferenceLayerCache, wkvB: Float32Array): Float32Array {
  const { num_attention_heads: H, qk_nope_head_dim: dn, qk_rope_head_dim: dr, qk_head_dim: dq, v_head_dim: dv, kv_lora_rank: rkv } = c;
  const T = positions.length;
  const o = new Float32Array(T * H * dv);
  const scores = new Float64Array(cache.kPe.length);
  const qLat = new Float64Array(rkv);
  const oLat = new Float64Array(rkv);
  for (let s = 0; s < T; s++) {
    const n = positions[s] + 1; // causal: positions 0 .. positions[s]
    for (let h = 0; h < H; h++) {
      const qo = s * H * dq + h * dq;
      const kvRow = h * (dn + dv);
      // q_lat [rkv] = q_nope [dn] @ W_UK[h] [dn, rkv]
      qLat.fill(0);
      for (let i = 0; i < dn; i++) {
        const qi = q[qo + i];
        const row = (kvRow + i) * rkv;
        for (let j = 0; j < rkv; j++) qLat[j] += qi * wkvB[row + j];
      }
      for (let t = 0; t < n; t++) {
        const cT = cache.cKv[t];
        const kT = cache.kPe[t];
        let score = 0;
        for (let j = 0; j < rkv; j++) score += qLat[j] * cT[j];
        for (let i = 0; i < dr; i++) score += q[qo + dn + i] * kT[i];
        scores[t] = score * c.softmax_scale;
      }
      softmax(scores, n);
      // o_lat [rkv] = sum_t P[t] c_hat[t];  o[h] [dv] = W_UV[h] [dv, rkv] @ o_lat
      oLat.fill(0);
      for (let t = 0; t < n; t++) {
        const cT = cache.cKv[t];
        for (let j = 0; j < rkv; j++) oLat[j] += scores[t] * cT[j];
      }
      for (let v = 0; v < dv; v++) {
        const row = (kvRow + dn + v) * rkv;
        let acc = 0;
        for (let j = 0; j < rkv; j++) acc += wkvB[row + j] * oLat[j];
        o[s * H * dv + h * dv + v] = acc;
      }
    }
  }
  return o;
}

/** o [T, H * dv] with per-head keys [k_nope ; k_pe] and values expanded from the cached latents (kv_b_proj's input rounded with `round`). */
function naiveAttention(c: DeepseekV3Config, q: Float32Array, positions: Uint32Array, cache: ReferenceLayerCache, wkvB: Float32Array, round: ActRounding['parallel'] | null): Float32Array {
  const { num_attention_heads: H, qk_nope_head_dim: dn, qk_rope_head_dim: dr, qk_head_dim: dq, v_head_dim: dv, kv_lora_rank: rkv } = c;
  const T = positions.length;
  const rows = cache.cKv.length;
  const latents = new Float32Array(rows * rkv);
  cache.cKv.forEach((row, t) => latents.set(row, t * rkv));
  const kvB = linear(roundInput(latents, rows, rkv, round), rows, wkvB, H * (dn + dv), rkv); // [rows, H, dn + dv]: k_nope then v per head
  const o = new Float32Array(T * H * dv);
  const scores = new Float64Array(rows);
  for (let s = 0; s < T; s++) {
    const n = positions[s] + 1;
    for (let h = 0; h < H; h++) {
      const qo = s * H * dq + h * dq;
      for (let t = 0; t < n; t++) {
        const ko = t * H * (dn + dv) + h * (dn + dv);
        const kT = cache.kPe[t];
        let score = 0;
        for (let i = 0; i < dn; i++) score += q[qo + i] * kvB[ko + i];
        for (let i = 0; i < dr; i++) score += q[qo + dn + i] * kT[i];
        scores[t] = score * c.softmax_scale;
      }
      softmax(scores, n);
      for (let v = 0; v < dv; v++) {
        let acc = 0;
        for (let t = 0; t < n; t++) acc += scores[t] * kvB[t * H * (dn + dv) + h * (dn + dv) + dn + v];
        o[s * H * dv + h * dv + v] = acc;
      }
    }
  }
  return o;
}
