// The kernels (pipelines) one model uses, built once and shared by all its plans: a plan only
// prepares calls (params and bind groups) against them.

import type { DeepseekV3Config } from '../config.ts';
import type { Gpu } from '../gpu/device.ts';
import { createActRound } from '../kernels/act_quant.ts';
import { createAdd } from '../kernels/add.ts';
import { createEmbedGather, type EmbedGather } from '../kernels/embed_gather.ts';
import { createMlaAbsorb, type MlaAbsorb } from '../kernels/mla_absorb.ts';
import { createMlaDecodePipeline, type MlaDecodePipeline } from '../kernels/mla_decode.ts';
import { createMlaPrefillPipeline, type MlaPrefillPipeline } from '../kernels/mla_prefill.ts';
import { createMoeExperts, type MoeExperts } from '../kernels/moe_experts.ts';
import { createMoeRoutePipeline, type MoeRoutePipeline } from '../kernels/moe_route.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import type { PipelineCache } from '../kernels/pipeline_cache.ts';
import { createRmsNormPipeline, type RmsNormPipeline } from '../kernels/rmsnorm.ts';
import { createRopeYarnPipeline, type RopeYarnPipeline } from '../kernels/rope_yarn.ts';
import { createRepetitionPenalty } from '../kernels/repetition_penalty.ts';
import { createSamplePipeline, type SamplePipeline } from '../kernels/sample.ts';
import type { EmbedDtype } from '../kernels/embed_gather.ts';
import { createCacheWriteKernels, type CacheWriteKernels } from './kv_cache.ts';
import { createLinearKernels, type LinearKernels, type LinearStrategies } from './linear.ts';

/**
 * weight_only: f32 activations into the dequantised FP8 weights (the official "bf16" path, in f32);
 * w8a8: the input of every FP8 Linear first rounded to e4m3 per token and 128-channel group with the
 * official act_quant scale (the official "fp8" path, DEEPSEEK_V3_MATH.md 5; sums in f32).
 */
export type ModelNumerics = 'weight_only' | 'w8a8';

export interface ModelKernels {
  readonly gpu: Gpu;
  readonly cache: PipelineCache;
  readonly numerics: ModelNumerics;
  /** w8a8 only: round x [M, K] in place to what act_quant makes of it. */
  readonly actRound?: ReturnType<typeof createActRound>;
  readonly linear: LinearKernels;
  readonly rmsnorm: RmsNormPipeline;
  /** x += delta, then y = RMSNorm(x): the residual add fused with the next norm. */
  readonly addRmsnorm: RmsNormPipeline;
  readonly rope: RopeYarnPipeline;
  readonly cacheWrite: CacheWriteKernels;
  readonly mlaDecode: MlaDecodePipeline;
  readonly mlaPrefill: MlaPrefillPipeline;
  readonly route: MoeRoutePipeline;
  readonly experts: MoeExperts;
  readonly add: ReturnType<typeof createAdd>;
  readonly sample: SamplePipeline;
  readonly repetitionPenalty: ReturnType<typeof createRepetitionPenalty>;
  absorb(format: WeightFormat): MlaAbsorb;
  embed(dtype: EmbedDtype): EmbedGather;
}

export function createModelKernels(gpu: Gpu, cache: PipelineCache, config: DeepseekV3Config, strategies: LinearStrategies = {}, numerics: ModelNumerics = 'weight_only'): ModelKernels {
  const { device } = gpu;
  const isSoftware = gpu.adapter.isSoftware;
  const absorbs = new Map<WeightFormat, MlaAbsorb>();
  const embeds = new Map<EmbedDtype, EmbedGather>();
  return {
    gpu,
    cache,
    numerics,
    actRound: numerics === 'w8a8' ? createActRound({ device, cache }) : undefined,
    linear: createLinearKernels(gpu, cache, strategies),
    rmsnorm: createRmsNormPipeline(device, { addResidual: false, isSoftware }),
    addRmsnorm: createRmsNormPipeline(device, { addResidual: true, isSoftware }),
    rope: createRopeYarnPipeline(device),
    cacheWrite: createCacheWriteKernels(device, isSoftware),
    mlaDecode: createMlaDecodePipeline(device, { isSoftware }),
    mlaPrefill: createMlaPrefillPipeline(cache, { isSoftware, kvLoraRank: config.kv_lora_rank }),
    route: createMoeRoutePipeline(device),
    experts: createMoeExperts({ device, cache, roundHidden: numerics === 'w8a8' }),
    add: createAdd(cache),
    sample: createSamplePipeline(device, { isSoftware }),
    repetitionPenalty: createRepetitionPenalty(cache),
    absorb(format) {
      let k = absorbs.get(format);
      if (!k) absorbs.set(format, (k = createMlaAbsorb({ cache, weights: format })));
      return k;
    },
    embed(dtype) {
      let k = embeds.get(dtype);
      if (!k) embeds.set(dtype, (k = createEmbedGather({ gpu, cache, dtype })));
      return k;
    },
  };
}
