// One layer's multi-head latent attention on the GPU, absorbed form (src/model/MATH.md 4.3-4.4),
// for the T rows of a plan at positions startPos .. startPos + T - 1:
//
//   q      = q_b_proj(RMSNorm(q_a_proj(x)))   (or q_proj(x))
//   kv_a   = kv_a_proj_with_mqa(x)  -> cache row [kv_a_layernorm(c_kv) | RoPE(k_pe)]
//   q_lat  = q_nope · W_UK,  q_pe = RoPE(q's last dr per head)   (kv_b_proj read in place, per head)
//   o_lat  = softmax((q_lat · c_hat + q_pe · k_pe) · softmax_scale) · c_hat   over 0 .. own position
//   out    = o_proj(o_lat · W_UVᵀ)
//
// Recorded in one compute pass as the calls "before" (q_a_proj | q_proj with kv_a_proj_with_mqa in one
// GEMV; mla_latent_norm: q_a_layernorm and the cache rows; q_b_proj) and "after" (absorb with RoPE on
// q_pe, attention, W_UV, o_proj). Small row counts take mla_decode (flash-decoding), larger mla_prefill.
// With `residual` (decode plans, layer.ts) the input is the residual stream h itself: the first GEMV
// applies input_layernorm in its prologue, and o_proj adds its output into h (no attnOut).

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError } from '../errors.ts';
import type { PreparedCall } from '../gpu/kernel.ts';
import { GEMV_MAX_ROWS } from '../kernels/gemv_fp8.ts';
import type { Activations } from './activations.ts';
import { unsplit, type AttentionWeights } from './gpu_weights.ts';
import { prepareCacheWrite, type LatentCache } from './kv_cache.ts';
import type { ModelKernels } from './model_kernels.ts';

export interface PreparedMla {
  /** The projections and the cache write, in order (ends with q ready, the cache rows written). */
  readonly before: readonly PreparedCall[];
  /** The attention over the cache, in order (ends with o_proj writing acts.attnOut). */
  readonly after: readonly PreparedCall[];
  /** Moves the step to startPos (cache write and attention params). */
  setStartPos(startPos: number): void;
  /** Records "before" then "after" in one compute pass. */
  encode(encoder: GPUCommandEncoder): void;
  destroy(): void;
}

export interface MlaPlanArgs {
  kernels: ModelKernels;
  config: DeepseekV3Config;
  weights: AttentionWeights;
  acts: Activations;
  cache: LatentCache;
  /** The layer's index in `cache` (the MTP layer has its own slot). */
  cacheLayer: number;
  /** [qk_rope_head_dim / 2] f32 YaRN inverse frequencies. */
  invFreq: GPUBuffer;
  /**
   * Read acts.h, normalised by the q_a|kv_a GEMV with the layer's input_layernorm, and add o_proj
   * into acts.h (at most GEMV_MAX_ROWS rows, weight_only numerics); default: acts.x in, acts.attnOut out.
   */
  residual?: boolean;
  label: string;
}

/** Prepares the attention of one layer for `acts.rows` rows (input acts.x, output acts.attnOut; or `residual`). */
export function prepareMla({ kernels: k, config: c, weights: w, acts, cache, cacheLayer, invFreq, residual, label }: MlaPlanArgs): PreparedMla {
  const T = acts.rows;
  const H = c.num_attention_heads;
  const before: PreparedCall[] = [];
  const after: PreparedCall[] = [];
  const all: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (all.push(p), p);

  // w8a8: each FP8 Linear's input rounded in place (x feeds only q and kv_a here, q_a's norm only
  // q_b_proj, o only o_proj).
  // x feeds q_a_proj and kv_a_proj_with_mqa, plain Linears officially: they take the config's
  // scale_fmt (with a plain q_proj, a ColumnParallelLinear, gpu_model.ts refuses ue8m0).
  const round = (x: GPUBuffer, K: number, name: string, into: PreparedCall[], fp8: boolean, scaleFmt = false) => {
    const kernel = scaleFmt ? k.actRoundScaleFmt : k.actRound;
    if (kernel && fp8) into.push(keep(kernel.prepare({ M: T, K, x, label: `${label}.${name}.act_quant` })));
  };
  if (residual && (T > GEMV_MAX_ROWS || k.actRound)) throw new ArgumentError(`${label}: the attention reads the residual stream in decode plans of weight_only numerics only (${T} rows, ${k.numerics})`);
  const input = residual ? { x: acts.h, norm: { weight: w.input_layernorm, eps: c.rms_norm_eps } } : { x: acts.x };
  try {
    round(acts.x, c.hidden_size, 'x', before, w.kv_a_proj_with_mqa.format === 'fp8', true);
    // q_a_proj (or q_proj) and kv_a_proj_with_mqa read the same x: one GEMV dispatch where both are whole.
    const qProj = w.q_proj ?? w.q_a_proj!;
    const qOut = w.q_proj ? acts.q : acts.qA!;
    before.push(
      keep(
        k.linear.preparePair(qProj, w.kv_a_proj_with_mqa, {
          M: T, ...input, y: qOut, ySecond: acts.kvA, label: `${label}.${w.q_proj ? 'q_proj' : 'q_a_proj'}`, labelSecond: `${label}.kv_a_proj_with_mqa`,
        }),
      ),
    );
    // q_a_layernorm, and the cache rows [kv_a_layernorm(c_kv) | RoPE(k_pe)] at the step's positions.
    const cacheWrite = keep(
      prepareCacheWrite(k.latentNorm, {
        config: c, cache, layer: cacheLayer, startPos: 0, rows: T, kvA: acts.kvA, kvNormWeight: w.kv_a_layernorm, positions: acts.positions, invFreq,
        q: w.q_proj ? undefined : { qA: acts.qA!, weight: w.q_a_layernorm!, qANorm: acts.qANorm! },
        label: `${label}.latent_norm`,
      }),
    );
    before.push(cacheWrite);
    if (!w.q_proj) {
      round(acts.qANorm!, c.q_lora_rank!, 'q_a_norm', before, w.q_b_proj!.format === 'fp8');
      before.push(keep(k.linear.prepare(w.q_b_proj!, { M: T, x: acts.qANorm!, y: acts.q, label: `${label}.q_b_proj` })));
    }

    const shape = { rows: T, heads: H, qkNopeHeadDim: c.qk_nope_head_dim, qkRopeHeadDim: c.qk_rope_head_dim, vHeadDim: c.v_head_dim, kvLoraRank: c.kv_lora_rank };
    const kvBWhole = unsplit(w.kv_b_proj); // read per head by mla_absorb, never split
    const kvB = { kvB: kvBWhole.weight, kvBScale: kvBWhole.weight_scale_inv };
    // absorb_q also applies RoPE to q_pe as it copies it out (q itself stays unrotated).
    after.push(
      keep(
        k.absorbQ(w.kv_b_proj.format).prepare({
          ...shape, ...kvB, q: acts.q, qLat: acts.qLat, qPe: acts.qPe, positions: acts.positions, invFreq, label: `${label}.q_absorb`,
        }),
      ),
    );
    const attentionArgs = {
      rows: T, heads: H, kvLoraRank: c.kv_lora_rank, ropeDim: c.qk_rope_head_dim, maxT: cache.maxT, startPos: 0, softmaxScale: c.softmax_scale,
      qLat: acts.qLat, qPe: acts.qPe, cache: cache.buffer, cacheByteOffset: cache.layerOffset(cacheLayer), oLat: acts.oLat, label: `${label}.attention`,
    };
    // Decode rows: mla_decode goes on through W_UV into o (one dispatch while one split covers the
    // context); prefill chunks: mla_prefill into o_lat, then expand_o.
    const decode = T <= GEMV_MAX_ROWS;
    const attention = keep(
      decode
        ? k.mlaDecode(w.kv_b_proj.format).prepare({ ...attentionArgs, ...kvB, qkNopeHeadDim: c.qk_nope_head_dim, vHeadDim: c.v_head_dim, o: acts.o })
        : k.mlaPrefill.prepare(attentionArgs),
    );
    after.push(attention);
    if (!decode) after.push(keep(k.expandO(w.kv_b_proj.format).prepare({ ...shape, ...kvB, oLat: acts.oLat, o: acts.o, label: `${label}.v_expand` })));
    round(acts.o, c.num_attention_heads * c.v_head_dim, 'o', after, w.o_proj.format === 'fp8');
    after.push(keep(k.linear.prepare(w.o_proj, { M: T, x: acts.o, ...(residual ? { y: acts.h, accumulate: true } : { y: acts.attnOut }), label: `${label}.o_proj` })));

    return {
      before,
      after,
      setStartPos(startPos) {
        cacheWrite.setStartPos(startPos);
        attention.setStartPos(startPos);
      },
      encode(encoder) {
        // one pass: the cache rows are written by a dispatch of `before`, not a copy
        const pass = encoder.beginComputePass({ label: `${label}.attention` });
        for (const call of before) call.encode(pass);
        for (const call of after) call.encode(pass);
        pass.end();
      },
      destroy() {
        for (const p of all) p.destroy();
      },
    };
  } catch (err) {
    for (const p of all) p.destroy();
    throw err;
  }
}
