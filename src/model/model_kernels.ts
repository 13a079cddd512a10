// The kernels (pipelines) one model uses, built once and shared by all its plans: a plan only
// prepares calls (params and bind groups) against them.

import type { DeepseekV3Config } from '../config.ts';
import type { Gpu } from '../gpu/device.ts';
import type { Kernel, KernelContext } from '../gpu/kernel.ts';
import type { PipelineCache } from '../gpu/pipeline_cache.ts';
import { createActRound, type ActRoundArgs } from '../kernels/act_quant.ts';
import { createEmbedGather, type EmbedDtype, type EmbedGather } from '../kernels/embed_gather.ts';
import { createMlaAbsorbQ, createMlaExpandO, type AbsorbQArgs, type ExpandOArgs, type MlaAbsorb } from '../kernels/mla_absorb.ts';
import { createMlaLatentNorm, type MlaLatentNorm } from '../kernels/mla_latent_norm.ts';
import { createMlaDecode, type MlaDecode, type MlaDecodeReduce } from '../kernels/mla_decode.ts';
import { createMlaPrefill, type MlaPrefillArgs, type PreparedMlaPrefill } from '../kernels/mla_prefill.ts';
import { createMoeRoute, type MoeRouteArgs, type RouteReduce } from '../kernels/moe_route.ts';
import { createMlp, createMoeExperts, type ExpertReads, type ExpertWeightFormat, type MlpArgs, type MoeExperts } from '../kernels/moe_experts.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import { createRmsNorm, type RmsNorm, type RmsNormReduce } from '../kernels/rmsnorm.ts';
import { createRepetitionPenalty, type PreparedRepetitionPenalty, type RepetitionPenaltyArgs } from '../kernels/repetition_penalty.ts';
import { createSample, type Sample } from '../kernels/sample.ts';
import { createSpeculativeAccept, type PreparedSpeculativeAccept, type SpeculativeAcceptArgs } from '../kernels/speculative_accept.ts';
import { createLinearKernels, type LinearKernels, type LinearStrategies } from './linear.ts';

/**
 * weight_only: f32 activations into the dequantised FP8 weights (the official "bf16" path, in f32);
 * w8a8: the input of every FP8 Linear first rounded to e4m3 per token and 128-channel group with the
 * official act_quant scale (the official "fp8" path, src/model/MATH.md 5; sums in f32).
 */
export type ModelNumerics = 'weight_only' | 'w8a8';

/** The kernels (pipelines) one model uses, created once and shared by all its plans: a plan only prepares calls against them. */
export interface ModelKernels extends KernelContext {
  readonly numerics: ModelNumerics;
  /**
   * w8a8 only: round x [M, K] to what act_quant makes of it, with amax / 448 scales: the input of
   * the official ColumnParallelLinear / RowParallelLinear modules (q_proj, q_b_proj, o_proj, dense
   * MLP, shared experts), which never pass scale_fmt on.
   */
  readonly actRound?: Kernel<ActRoundArgs>;
  /**
   * w8a8 only: the same with the config's scale_fmt (ue8m0: powers of two), for the official plain
   * Linear modules (q_a_proj, kv_a_proj_with_mqa, routed experts). actRound itself without scale_fmt.
   */
  readonly actRoundScaleFmt?: Kernel<ActRoundArgs>;
  readonly linear: LinearKernels;
  readonly rmsnorm: RmsNorm;
  /** x += delta, then y = RMSNorm(x): the residual add fused with the next norm. */
  readonly addRmsnorm: RmsNorm;
  /** q_a_layernorm, kv_a_layernorm, RoPE on k_pe and the latent cache write in one dispatch (kv_cache.ts). */
  readonly latentNorm: MlaLatentNorm;
  readonly mlaPrefill: Kernel<MlaPrefillArgs, PreparedMlaPrefill>;
  /** How the MLP and expert weights are stored: the format `experts` and `mlp` read. */
  readonly expertWeights: ExpertWeightFormat;
  readonly experts: MoeExperts;
  /** The router's selection alone (offloaded layers read its ids back before their experts run). */
  readonly route: Kernel<MoeRouteArgs>;
  readonly mlp: Kernel<MlpArgs>;
  readonly sample: Sample;
  /** The verify step's acceptance of a sampled draft (speculative_verify.ts). */
  readonly speculativeAccept: Kernel<SpeculativeAcceptArgs, PreparedSpeculativeAccept>;
  readonly repetitionPenalty: Kernel<RepetitionPenaltyArgs, PreparedRepetitionPenalty>;
  /** kv_b_proj's absorbed products in its stored format: q_nope @ W_UK, and W_UV over o_lat. */
  absorbQ(format: WeightFormat): MlaAbsorb<AbsorbQArgs>;
  expandO(format: WeightFormat): MlaAbsorb<ExpandOArgs>;
  /** Decode attention over the latent cache through W_UV, reading kv_b_proj in its stored format. */
  mlaDecode(format: WeightFormat): MlaDecode;
  embed(dtype: EmbedDtype): EmbedGather;
}

export function createModelKernels(
  gpu: Gpu,
  pipelines: PipelineCache,
  config: DeepseekV3Config,
  strategies: LinearStrategies = {},
  numerics: ModelNumerics = 'weight_only',
  expertWeights: ExpertWeightFormat = 'fp8',
  normReduce?: RmsNormReduce,
  /** Decode attention's reduction, the router selection's and the verify step's expert reads (measured at load: gpu_model.ts measuredVariants). */
  reduces: { mlaDecode?: MlaDecodeReduce; route?: RouteReduce; verifyExperts?: ExpertReads } = {},
): ModelKernels {
  const ctx: KernelContext = { gpu, pipelines };
  const byFormat = <K>(make: (format: WeightFormat) => K) => {
    const made = new Map<WeightFormat, K>();
    return (format: WeightFormat): K => {
      let k = made.get(format);
      if (!k) made.set(format, (k = make(format)));
      return k;
    };
  };
  const embeds = new Map<EmbedDtype, EmbedGather>();
  const w8a8 = numerics === 'w8a8';
  // scale_fmt "ue8m0" (V3.1): act_quant rounds its scales up to powers of two, for plain Linears only.
  const scaleFormat = config.quantization_config?.scale_fmt === 'ue8m0' ? 'ue8m0' : 'f32';
  const actRound = createActRound(ctx);
  return {
    gpu,
    pipelines,
    numerics,
    actRound: w8a8 ? actRound : undefined,
    actRoundScaleFmt: w8a8 ? (scaleFormat === 'ue8m0' ? createActRound(ctx, { scaleFormat }) : actRound) : undefined,
    linear: createLinearKernels(ctx, strategies),
    rmsnorm: createRmsNorm(ctx, { reduce: normReduce }),
    addRmsnorm: createRmsNorm(ctx, { addResidual: true, reduce: normReduce }),
    // The RMSNorm's measured reduction stands for the latent norms' too (the same row reductions;
    // on SwiftShader subgroup halves a decode row at kv_lora_rank 64, tools/mla_latent_norm_reduce.ts).
    latentNorm: createMlaLatentNorm(ctx, { qNorm: config.q_lora_rank === null ? 'none' : 'q_a_layernorm', reduce: normReduce }),
    mlaPrefill: createMlaPrefill(ctx, { kvLoraRank: config.kv_lora_rank }),
    expertWeights,
    // W8A8 rounds activations for FP8 weights only (the official linear() runs BF16 weights as they are).
    experts: createMoeExperts(ctx, { roundHidden: w8a8 && expertWeights === 'fp8', actScaleFormat: scaleFormat, weights: expertWeights, routeReduce: reduces.route, expertReads: reduces.verifyExperts }),
    route: createMoeRoute(ctx, { reduce: reduces.route }),
    mlp: createMlp(ctx, { roundHidden: w8a8 && expertWeights === 'fp8', weights: expertWeights }), // dense MLP: amax / 448 (experts rounds its shared experts alike)
    sample: createSample(ctx),
    speculativeAccept: createSpeculativeAccept(ctx),
    repetitionPenalty: createRepetitionPenalty(ctx),
    absorbQ: byFormat((weights) => createMlaAbsorbQ(ctx, { weights })),
    expandO: byFormat((weights) => createMlaExpandO(ctx, { weights })),
    mlaDecode: byFormat((weights) => createMlaDecode(ctx, { weights, reduce: reduces.mlaDecode })),
    embed(dtype) {
      let k = embeds.get(dtype);
      if (!k) embeds.set(dtype, (k = createEmbedGather(ctx, { dtype })));
      return k;
    },
  };
}
