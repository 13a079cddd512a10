// One decoder layer of a plan: MLA, then the residual adds fused into the norms around the FFN.
// Shared by the main model's plans and the MTP module.

import type { DeepseekV3Config } from '../config.ts';
import type { PreparedCall } from '../kernels/matmul_operands.ts';
import { prepareRmsNorm, type PreparedRmsNorm } from '../kernels/rmsnorm.ts';
import type { Activations } from './activations.ts';
import { prepareFfn } from './ffn.ts';
import type { LayerWeights } from './gpu_weights.ts';
import type { LatentCache } from './kv_cache.ts';
import { prepareMla, type PreparedMla } from './mla.ts';
import type { ModelKernels } from './model_kernels.ts';

export interface LayerPlan {
  mla: PreparedMla;
  /** add_rmsnorm(attention), FFN calls, add_rmsnorm(FFN into the next norm). */
  tail: PreparedCall[];
}

export function prepareNorm(k: ModelKernels, c: DeepseekV3Config, x: GPUBuffer, weight: GPUBuffer, y: GPUBuffer, rows: number, label: string): PreparedRmsNorm {
  return prepareRmsNorm(k.gpu.device, k.rmsnorm, { rows, width: c.hidden_size, eps: c.rms_norm_eps, x, weight, y, label });
}

/** One decoder layer: attention, then the fused residual adds around the FFN. `nextNorm` is the next layer's input_layernorm (model.norm after the last). */
export function prepareLayer(
  k: ModelKernels,
  c: DeepseekV3Config,
  w: LayerWeights,
  nextNorm: GPUBuffer,
  acts: Activations,
  cache: LatentCache,
  cacheLayer: number,
  invFreq: GPUBuffer,
  keep: <P extends { destroy(): void }>(p: P) => P,
  isLast = false,
): LayerPlan {
  const { device } = k.gpu;
  const T = acts.rows;
  const label = `layer${w.index}`;
  const mla = keep(prepareMla({ kernels: k, config: c, weights: w.attention, acts, cache, cacheLayer, invFreq, label }));
  const addNorm = (delta: GPUBuffer, weight: GPUBuffer, y: GPUBuffer, name: string) =>
    keep(prepareRmsNorm(device, k.addRmsnorm, { rows: T, width: c.hidden_size, eps: c.rms_norm_eps, x: acts.h, delta, weight, y, label: `${label}.${name}` }));
  const tail: PreparedCall[] = [addNorm(acts.attnOut, w.attention.post_attention_layernorm, acts.x, 'post_attention_layernorm')];
  for (const call of prepareFfn(k, c, w, acts, label)) tail.push(keep(call));
  tail.push(addNorm(acts.ffnOut, nextNorm, isLast ? acts.hidden : acts.x, 'next_norm'));
  return { mla, tail };
}

