// The routed experts and the plain SwiGLU MLP, the executable spec of moe_experts_gate_up.wgsl,
// moe_experts_down.wgsl, moe_combine.wgsl and moe_group.wgsl (src/model/MATH.md 3, 4.5, 4.6):
//   Expert_e(x) = (silu(x @ gate_e^T) * (x @ up_e^T)) @ down_e^T,    silu(z) = z * sigmoid(z)
//   MoE_routed(x[t]) = sum over the chosen e of w * Expert_e(x[t]), added in expert-index order
//                      (as the official MoE.forward loops over experts).
// Computed in float64 against W = f32(e4m3(Q) * S) (fp8) or the bf16 value itself (bf16), the
// value the f32 kernels approximate.

import { align4 } from '../gpu/buffers.ts';
import { BLOCK } from '../gpu/kernel.ts';
import { actQuantRef } from './act_quant.ref.ts';
import { E4M3_VALUES } from './fp8_e4m3.ref.ts';

/** One projection of all experts, stacked as src/model/placement.ts places them on the GPU. */
export type StackedExpertWeight =
  | {
      format: 'fp8';
      /** Expert e's [rows, cols] e4m3 bytes at byte e * align4(rows * cols). */
      bytes: Uint8Array;
      /** Expert e's weight_scale_inv [ceil(rows/128), ceil(cols/128)] f32 at e * ceil(rows/128) * ceil(cols/128). */
      scale: Float32Array;
    }
  | {
      format: 'bf16';
      /** Expert e's [rows, cols] little-endian bf16 at byte e * align4(2 * rows * cols). */
      bytes: Uint8Array;
    };

export interface ExpertWeights {
  gate_proj: StackedExpertWeight;
  up_proj: StackedExpertWeight;
  down_proj: StackedExpertWeight;
}

export interface ExpertShape {
  hidden_size: number;
  moe_intermediate_size: number;
}

/** Expert e's W [rows, cols] as f32: fp8 W[i, j] = f32(e4m3(Q[i, j]) * S[i/128, j/128]); bf16 its value. */
export function dequantizeExpert(w: StackedExpertWeight, e: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  if (w.format === 'bf16') {
    // a bf16 value is the upper half of an f32 (bf16ToF32 of gemm_fp8.ref.ts, one view for all)
    const bits = new Uint32Array(out.buffer);
    const base = e * align4(2 * rows * cols);
    for (let i = 0; i < rows * cols; i++) bits[i] = (w.bytes[base + 2 * i] | (w.bytes[base + 2 * i + 1] << 8)) << 16;
    return out;
  }
  const base = e * align4(rows * cols);
  const colBlocks = Math.ceil(cols / BLOCK);
  const scaleBase = e * Math.ceil(rows / BLOCK) * colBlocks;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const s = w.scale[scaleBase + Math.floor(i / BLOCK) * colBlocks + Math.floor(j / BLOCK)];
      out[i * cols + j] = E4M3_VALUES[w.bytes[base + i * cols + j]] * s;
    }
  }
  return out;
}

/** One expert's three matrices dequantised: gate, up [moe_inter, hidden], down [hidden, moe_inter]. */
export interface DequantizedExpert {
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

export function dequantizeExpertMlp(weights: ExpertWeights, shape: ExpertShape, e: number): DequantizedExpert {
  const { hidden_size: d, moe_intermediate_size: I } = shape;
  return {
    gate: dequantizeExpert(weights.gate_proj, e, I, d),
    up: dequantizeExpert(weights.up_proj, e, I, d),
    down: dequantizeExpert(weights.down_proj, e, d, I),
  };
}

/**
 * The first half of one expert on one row x [hidden_size], in float64: h [moe_intermediate_size]
 * = silu(x @ gate^T) * (x @ up^T). roundHidden (W8A8, FP8 weights): h is rounded to f32, then to
 * the FP8 value act_quant gives it (the official Expert's w2 quantises its input; moe_intermediate_size
 * a multiple of 128).
 */
export function expertHiddenRef({ gate, up }: DequantizedExpert, shape: ExpertShape, x: ArrayLike<number>, roundHidden = false): Float64Array {
  const { hidden_size: d, moe_intermediate_size: I } = shape;
  const h = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let g = 0;
    let u = 0;
    for (let j = 0; j < d; j++) {
      g += x[j] * gate[i * d + j];
      u += x[j] * up[i * d + j];
    }
    h[i] = (g / (1 + Math.exp(-g))) * u;
  }
  if (roundHidden) {
    const { codes, scales } = actQuantRef(Float32Array.from(h), 1, I);
    for (let i = 0; i < I; i++) h[i] = Math.fround(E4M3_VALUES[codes[i]] * scales[Math.floor(i / BLOCK)]);
  }
  return h;
}

/** The second half: y [hidden_size] = h @ down^T, in float64. */
export function expertDownRef({ down }: DequantizedExpert, shape: ExpertShape, h: ArrayLike<number>): Float64Array {
  const { hidden_size: d, moe_intermediate_size: I } = shape;
  const y = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    let acc = 0;
    for (let i = 0; i < I; i++) acc += h[i] * down[j * I + i];
    y[j] = acc;
  }
  return y;
}

/** One expert (an MLP of 4.5) applied to one row x [hidden_size], in float64. */
export function expertRef(expert: DequantizedExpert, shape: ExpertShape, x: ArrayLike<number>): Float64Array {
  return expertDownRef(expert, shape, expertHiddenRef(expert, shape, x));
}

export interface MoeExpertsRefArgs extends ExpertShape {
  tokens: number;
  /** num_experts_per_tok. */
  topk: number;
  /** [tokens, hidden_size]. */
  x: Float32Array;
  /** [tokens, topk] expert ids, as moe_route writes them. */
  topkIds: Uint32Array;
  /** [tokens, topk] routing weights. */
  topkWeights: Float32Array;
  weights: ExpertWeights;
}

/**
 * out [tokens, hidden_size]: the weighted sum of each token's chosen experts. As the official
 * MoE.forward: for each expert in index order, y[tokens choosing it] += Expert(x) * weight.
 */
export function moeExpertsRef(args: MoeExpertsRefArgs): Float32Array {
  const { tokens, topk, hidden_size: d, x, topkIds, topkWeights, weights } = args;
  const acc = new Float64Array(tokens * d);
  const chosen = [...new Set(topkIds)].sort((a, b) => a - b);
  for (const e of chosen) {
    const expert = dequantizeExpertMlp(weights, args, e); // one expert's matrices at a time
    for (let pair = 0; pair < tokens * topk; pair++) {
      if (topkIds[pair] !== e) continue;
      const t = Math.floor(pair / topk);
      const y = expertRef(expert, args, x.subarray(t * d, (t + 1) * d));
      for (let j = 0; j < d; j++) acc[t * d + j] += topkWeights[pair] * y[j];
    }
  }
  return Float32Array.from(acc);
}

/** A dense MLP (or the merged shared experts): expert 0 of one-expert stacks, every token, weight 1. */
export function mlpRef(args: ExpertShape & { tokens: number; x: Float32Array; weights: ExpertWeights }): Float32Array {
  const { tokens, hidden_size: d } = args;
  const out = new Float32Array(tokens * d);
  const mlp = dequantizeExpertMlp(args.weights, args, 0);
  for (let t = 0; t < tokens; t++) out.set(expertRef(mlp, args, args.x.subarray(t * d, (t + 1) * d)), t * d);
  return out;
}

/** What moe_group.wgsl writes: offsets [E + 1] and the pairs t * topk + k sorted by expert, then pair. */
export function groupByExpertRef(topkIds: Uint32Array, experts: number): { offsets: Uint32Array; sortedPairs: Uint32Array } {
  const offsets = new Uint32Array(experts + 1);
  for (const e of topkIds) if (e < experts) offsets[e + 1]++;
  for (let e = 0; e < experts; e++) offsets[e + 1] += offsets[e];
  const sortedPairs = new Uint32Array(topkIds.length);
  const next = offsets.slice(0, experts);
  topkIds.forEach((e, pair) => {
    if (e < experts) sortedPairs[next[e]++] = pair;
  });
  return { offsets, sortedPairs };
}
