// One decoder layer of a plan, prepared for the plan's T rows (src/model/MATH.md 4.7), as four pieces the
// forward records in the paper's order:
//
//   attention            x -> attnOut: MLA, writing the layer's latent cache rows
//   postAttentionNorm    h += attnOut;  x = RMSNorm(h; post_attention_layernorm)
//   ffn                  x -> ffnOut: the dense MLP, or router -> routed experts + shared experts
//   nextNorm             h += ffnOut;   x = RMSNorm(h; next layer's input_layernorm)
//                        (after the last layer: hidden = RMSNorm(h; model.norm))
//
// The residual adds are fused into the norms that follow them. Shared by the main model's plans
// and the MTP module.
//
// Decode plans (`residual`, at most GEMV_MAX_ROWS rows of weight_only numerics) have no norm
// dispatches: each norm moves into the GEMV after it and each residual add into the kernel
// before it (src/kernels/gemv_fp8.ts prologue, ACCUMULATE):
//   attention            h -> RMSNorm(h; input_layernorm) in the q_a|kv_a GEMV ... o_proj: h += out
//   ffn                  RMSNorm(h; post_attention_layernorm) in the router gate's GEMV (writing x
//                        for the experts; a dense layer: an RMSNorm dispatch), the down pass: h += out
//                        (an offloaded or split layer leaves out in ffnOut: then h += ffnOut)
//   (model.norm in lm_head's GEMV: head.ts)

import type { DeepseekV3Config } from '../config.ts';
import type { PreparedCall } from '../gpu/kernel.ts';
import type { PreparedRmsNorm } from '../kernels/rmsnorm.ts';
import type { Activations } from './activations.ts';
import { prepareFfn, type OffloadedExperts } from './ffn.ts';
import type { LayerWeights } from './gpu_weights.ts';
import type { LatentCache } from './kv_cache.ts';
import { prepareMla, type PreparedMla } from './mla.ts';
import type { ModelKernels } from './model_kernels.ts';

export interface LayerPlan {
  readonly attention: PreparedMla;
  /** h += attnOut; x = RMSNorm(h) (not in a `residual` plan). */
  readonly postAttentionNorm?: PreparedRmsNorm;
  readonly ffn: readonly PreparedCall[];
  /** An offloaded MoE layer's routed and shared experts, run after the step reads the router's ids back. */
  readonly offloaded?: OffloadedExperts;
  readonly acts: Activations;
  /**
   * h += ffnOut, then x (or hidden) = RMSNorm(h; the next norm); in a `residual` plan only where
   * the FFN left its output in ffnOut, and its normed rows are not read (the next GEMV norms h itself).
   */
  readonly nextNorm?: PreparedRmsNorm;
}

/** What a step records into; at an offload point the driver submits `encoder` and puts a fresh one here. */
export interface Recording {
  encoder: GPUCommandEncoder;
}

/** Where a step stops recording: an offloaded layer's experts, which need the ids its router chose. */
export interface OffloadPoint {
  experts: OffloadedExperts;
  acts: Activations;
}

/**
 * A step's recording, as a generator that yields at each offloaded layer (src/model/offload_step.ts
 * drives it); a model whose experts are all resident never yields, and records in one go.
 */
export type StepRecord = Generator<OffloadPoint, void, void>;

export interface LayerPlanOptions {
  kernels: ModelKernels;
  config: DeepseekV3Config;
  weights: LayerWeights;
  acts: Activations;
  cache: LatentCache;
  /** The layer's slot in `cache` (the MTP layer has its own). */
  cacheLayer: number;
  /** [qk_rope_head_dim / 2] f32 YaRN inverse frequencies. */
  invFreq: GPUBuffer;
  /** The next layer's input_layernorm weight, or model.norm (shared_head.norm for MTP) after the last. */
  nextNormWeight: GPUBuffer;
  /** The last layer writes acts.hidden (the head's input) instead of acts.x. */
  isLast: boolean;
  /** A decode plan's layer without norm dispatches (see the top of this file). */
  residual?: boolean;
  /** Takes ownership of every prepared call (the plan destroys them). */
  keep: <P extends { destroy(): void }>(p: P) => P;
}

/** y = RMSNorm(x) over `rows` rows of hidden_size: a layer's input_layernorm, the MTP module's norms. */
export function prepareNorm(k: ModelKernels, c: DeepseekV3Config, args: { x: GPUBuffer; weight: GPUBuffer; y: GPUBuffer; rows: number; label: string; yLayout?: { stride: number; offset: number } }): PreparedRmsNorm {
  return k.rmsnorm.prepare({ width: c.hidden_size, eps: c.rms_norm_eps, ...args });
}

export function prepareLayer({ kernels: k, config: c, weights: w, acts, cache, cacheLayer, invFreq, nextNormWeight, isLast, residual = false, keep }: LayerPlanOptions): LayerPlan {
  const label = `layer${w.index}`;
  const addNorm = (delta: GPUBuffer, weight: GPUBuffer, y: GPUBuffer, name: string) =>
    keep(k.addRmsnorm.prepare({ rows: acts.rows, width: c.hidden_size, eps: c.rms_norm_eps, x: acts.h, delta, weight, y, label: `${label}.${name}` }));
  const attention = keep(prepareMla({ kernels: k, config: c, weights: w.attention, acts, cache, cacheLayer, invFreq, residual, label }));
  const postAttentionNorm = residual ? undefined : addNorm(acts.attnOut, w.attention.post_attention_layernorm, acts.x, 'post_attention_layernorm');
  const ffn = prepareFfn(k, c, w, acts, label, residual);
  ffn.calls.forEach(keep);
  if (ffn.offloaded) [ffn.offloaded.shared, ffn.offloaded.pass, ffn.offloaded.finish].forEach((call) => call && keep(call));
  // residual: the FFN's output still in ffnOut is added here; the normed rows go to x, which nothing reads before the next layer's gate rewrites it
  const nextNorm = !residual ? addNorm(acts.ffnOut, nextNormWeight, isLast ? acts.hidden : acts.x, 'next_norm') : ffn.inFfnOut ? addNorm(acts.ffnOut, nextNormWeight, acts.x, 'residual_add') : undefined;
  return { attention, postAttentionNorm, ffn: ffn.calls, offloaded: ffn.offloaded, acts, nextNorm };
}

/**
 * Records the layer: the attention's passes, then one pass for the norms and the FFN (an
 * offloaded layer stops after its router for the experts, and records the rest in a pass of its own).
 */
export function* encodeLayer(rec: Recording, layer: LayerPlan, label: string): StepRecord {
  layer.attention.encode(rec.encoder);
  let pass = rec.encoder.beginComputePass({ label: `${label}.ffn` });
  layer.postAttentionNorm?.encode(pass);
  for (const call of layer.ffn) call.encode(pass);
  if (layer.offloaded) {
    pass.end();
    yield { experts: layer.offloaded, acts: layer.acts };
    pass = rec.encoder.beginComputePass({ label: `${label}.ffn.finish` });
    layer.offloaded.finish.encode(pass);
  }
  layer.nextNorm?.encode(pass);
  pass.end();
}
