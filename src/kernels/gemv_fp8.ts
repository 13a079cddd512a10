// GEMV for decode (M = 1 .. 4 rows): y = x W^T with W block-scaled FP8, bf16 or f32.
// Shader: shaders/gemv_fp8.wgsl (+ fp8_e4m3.wgsl, matmul_operands.wgsl); reference:
// gemm_fp8.ref.ts (matmulRef). Used by the decode plan for every Linear, lm_head and the router;
// the `linears: 'two'` variant computes two Linears that read the same x in one dispatch
// (q_a_proj or q_proj, and kv_a_proj_with_mqa: src/model/linear.ts preparePair).

import gemvSource from '../../shaders/gemv_fp8.wgsl?raw';
import subgroupsSource from '../../shaders/gemv_subgroups.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { checkBindings, type BufferResource, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import {
  checkMatmulArgs,
  checkOperandVariant,
  MATMUL_NUMERICS,
  matmulPipeline,
  operandStorageBuffers,
  prepareMatmul,
  WEIGHT_FORMATS,
  type MatmulBuffers,
  type MatmulKernel,
  type MatmulLinears,
  type MatmulNumerics,
  type MatmulShape,
  type WeightFormat,
} from './matmul_operands.ts';

export type { MatmulBuffers, MatmulShape } from './matmul_operands.ts';

/**
 * thread_per_4_rows: one invocation per 4 output columns (rows of W), no barrier (CPU adapters);
 * workgroup_per_row: one workgroup per output column, coalesced loads (GPUs);
 * subgroup_per_row: one invocation per output column, each column's K split over the lanes of
 * its subgroup and summed with subgroupAdd, no barrier (needs the device's 'subgroups').
 */
export const GEMV_STRATEGIES = ['thread_per_4_rows', 'workgroup_per_row', 'subgroup_per_row'] as const;
export type GemvStrategy = (typeof GEMV_STRATEGIES)[number];

/**
 * The RMSNorm before the Linear (shaders/gemv_fp8.wgsl, decode plans): none; rmsnorm (x is the
 * residual stream h, the Linear reads RMSNorm(h) * norm_weight); rmsnorm_write (and the normed
 * rows are written to GemvNorm.xNormed for the kernels after it).
 */
export const GEMV_PROLOGUES = ['none', 'rmsnorm', 'rmsnorm_write'] as const;
export type GemvPrologue = (typeof GEMV_PROLOGUES)[number];

/** The most rows of x one call takes (the current token plus the MTP draft fits easily). */
export const GEMV_MAX_ROWS = 4;

export interface GemvVariant {
  weights: WeightFormat;
  numerics: MatmulNumerics;
  strategy: GemvStrategy;
  linears: MatmulLinears;
  prologue: GemvPrologue;
}

export interface GemvOptions {
  /** Default fp8. */
  weights?: WeightFormat;
  /** Default weight_only. */
  numerics?: MatmulNumerics;
  /**
   * Default: thread_per_4_rows on a CPU adapter (adapter.isSoftware), else workgroup_per_row;
   * subgroup_per_row only when asked (or chosen by chooseGemvStrategy).
   */
  strategy?: GemvStrategy;
  /**
   * Invocations per workgroup, default 64; a power of two for workgroup_per_row. A tuning number.
   * subgroup_per_row takes any count (a partial subgroup splits K over the lanes it has), but a
   * column's sum is rounded by how many lanes its subgroup has: with a multiple of the subgroup
   * size (or less than one subgroup) every subgroup has as many, so a row band, or a Linear of a
   * `two` call, gives its single call's y bit for bit; otherwise they agree to rounding only.
   */
  workgroupSize?: number;
  /** Default one; two computes `second` too, in the same dispatch. */
  linears?: MatmulLinears;
  /** Default none; a norm prologue takes weight_only numerics (w8a8 rounds the normed x first). */
  prologue?: GemvPrologue;
}

/** A norm prologue's operands: x is then h, the rows RMSNorm normalises. */
export interface GemvNorm {
  /** [K] f32: the RMSNorm's weight (input_layernorm, post_attention_layernorm, model.norm). */
  weight: BufferResource;
  /** The config's rms_norm_eps. */
  eps: number;
  /** rmsnorm_write: [M, K] f32, written with RMSNorm(h) * weight. */
  xNormed?: BufferResource;
}

/** The second Linear of a `linears: 'two'` call: W_b [N, K] (K and x are the first's) into its own y. */
export interface GemvSecondLinear {
  /** Rows of W_b, columns of y. */
  N: number;
  /** As MatmulShape's: y [M, yStride], W_b's row 0 at column yCol. */
  yStride?: number;
  yCol?: number;
  weight: BufferResource;
  /** fp8 only. */
  weight_scale_inv?: BufferResource;
  y: BufferResource;
}

export interface GemvArgs extends MatmulShape, MatmulBuffers {
  /** Exactly for the `linears: 'two'` variant. */
  second?: GemvSecondLinear;
  /** Exactly for a variant with a norm prologue. */
  norm?: GemvNorm;
  /** y += x Wᵀ instead of y = (o_proj adding into the residual stream); default false. */
  accumulate?: boolean;
  label?: string;
}

export interface Gemv extends Kernel<GemvArgs> {
  readonly variant: GemvVariant;
  readonly workgroupSize: number;
  /** Check the arguments, write the params, build the bind group: once per plan, not per step. */
  prepare(args: GemvArgs): PreparedCall;
}

/** gemv_subgroups.wgsl leads: subgroup_per_row's `enable` must precede the operands' declarations. */
export const GEMV_KERNEL: MatmulKernel = {
  name: 'gemv_fp8',
  source: gemvSource,
  axes: { weights: WEIGHT_FORMATS, numerics: MATMUL_NUMERICS, strategy: GEMV_STRATEGIES, prologue: GEMV_PROLOGUES },
  leadingSnippets: [{ name: 'gemv_subgroups.wgsl', code: subgroupsSource }],
};

export function createGemv(ctx: KernelContext, options: GemvOptions = {}): Gemv {
  const { gpu, pipelines } = ctx;
  const variant: GemvVariant = {
    weights: options.weights ?? 'fp8',
    numerics: options.numerics ?? 'weight_only',
    strategy: options.strategy ?? (gpu.adapter.isSoftware ? 'thread_per_4_rows' : 'workgroup_per_row'),
    linears: options.linears ?? 'one',
    prologue: options.prologue ?? 'none',
  };
  checkOperandVariant('gemv_fp8', variant);
  if (!GEMV_PROLOGUES.includes(variant.prologue)) throw new ArgumentError(`gemv_fp8: "${String(variant.prologue)}" is not a prologue; use one of ${GEMV_PROLOGUES.join(', ')}`);
  if (variant.prologue !== 'none' && variant.numerics !== 'weight_only') {
    throw new ArgumentError(`gemv_fp8: a norm prologue takes weight_only numerics (w8a8 rounds the normed x before the GEMV); got ${variant.numerics}`);
  }
  if (!GEMV_STRATEGIES.includes(variant.strategy)) throw new ArgumentError(`gemv_fp8: "${String(variant.strategy)}" is not a strategy; use one of ${GEMV_STRATEGIES.join(', ')}`);
  if (variant.strategy === 'subgroup_per_row' && !gpu.device.features.has('subgroups')) {
    throw new GpuLimitError("gemv_fp8: the subgroup_per_row strategy needs the 'subgroups' feature, which this device lacks");
  }
  const workgroupSize = options.workgroupSize ?? 64;
  const perRow = variant.strategy === 'workgroup_per_row';
  const max = Math.min(gpu.device.limits.maxComputeWorkgroupSizeX, gpu.device.limits.maxComputeInvocationsPerWorkgroup);
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1 || workgroupSize > max || (perRow && (workgroupSize & (workgroupSize - 1)) !== 0)) {
    throw new ArgumentError(`gemv_fp8: workgroupSize ${workgroupSize} must be an integer in 1 .. ${max}${perRow ? ', a power of two' : ''}`);
  }
  // One pipeline per row count ROWS in {1, 2, 4}, the smallest >= M: a compile-time capacity, so
  // the cache key never holds M itself.
  // K % 4 == 0 takes the loaders without splicing and masking (K_ALIGNED of matmul_operands.wgsl).
  // ACCUMULATE and the prologue's EPS are pipeline constants too (one eps per model).
  const normBindings = variant.prologue === 'none' ? [] : (['read-only-storage', variant.prologue === 'rmsnorm_write' ? 'storage' : undefined] as const);
  const pipelineFor = (rows: number, K: number, accumulate: boolean, eps: number | undefined) =>
    matmulPipeline(
      pipelines,
      GEMV_KERNEL,
      variant,
      { WORKGROUP_SIZE: workgroupSize, ROWS: rows, K_ALIGNED: K % 4 === 0 ? 1 : 0, ACCUMULATE: accumulate ? 1 : 0, ...(eps === undefined ? {} : { EPS: eps }) },
      normBindings,
    );

  return {
    name: 'gemv_fp8',
    variant,
    workgroupSize,
    prepare(args) {
      const { M, N, K, yStride, yCol, label, second, norm } = args;
      const shape = { M, N, K, yStride, yCol };
      if (M > GEMV_MAX_ROWS) throw new ArgumentError(`gemv_fp8: M=${M} rows, at most ${GEMV_MAX_ROWS}; use gemm_fp8 for more`);
      if ((variant.linears === 'two') !== (second !== undefined)) {
        throw new ArgumentError(`gemv_fp8: the second Linear is given exactly to the linears 'two' variant (this one computes ${variant.linears})`);
      }
      // the second Linear's loader is the word-aligned one only (weight_b_quad in matmul_operands.wgsl)
      if (second && K % 4 !== 0) throw new ArgumentError(`gemv_fp8: two Linears in one call need K % 4 == 0, got K=${K}; run them as two calls`);
      checkMatmulArgs('gemv_fp8', gpu.device, variant, shape, args);
      checkNorm(gpu.device, variant.prologue, norm, M, K);
      // workgroup_per_row: a workgroup per column; thread_per_4_rows: an invocation per 4 columns;
      // subgroup_per_row: an invocation per column; with two Linears the second's invocations follow
      // the first's in the same workgroups
      const perInvocation = variant.strategy === 'subgroup_per_row' ? 1 : 4;
      const units = (rows: number) => (perRow ? rows : Math.ceil(rows / perInvocation));
      let secondLinear;
      if (second) {
        const storage = operandStorageBuffers(variant, 'two') + normBindings.filter(Boolean).length;
        const limit = gpu.device.limits.maxStorageBuffersPerShaderStage;
        if (storage > limit) {
          throw new GpuLimitError(`gemv_fp8: two Linears bind ${storage} storage buffers, over this GPU's maxStorageBuffersPerShaderStage (${limit}); run them as two calls`);
        }
        const secondShape = { M, N: second.N, K, yStride: second.yStride, yCol: second.yCol };
        const buffers = { weight: second.weight, weight_scale_inv: second.weight_scale_inv, y: second.y };
        checkMatmulArgs('gemv_fp8 (second Linear)', gpu.device, variant, secondShape, { x: args.x, x_scale: args.x_scale, ...buffers });
        secondLinear = { shape: secondShape, buffers, firstUnit: units(N) };
      }
      const pipeline = pipelineFor(M <= 2 ? M : GEMV_MAX_ROWS, K, args.accumulate ?? false, norm?.eps);
      return prepareMatmul({
        kernel: 'gemv_fp8',
        device: gpu.device,
        pipeline,
        variant,
        shape,
        buffers: args,
        workgroups: Math.ceil((units(N) + (second ? units(second.N) : 0)) / (perRow ? 1 : workgroupSize)),
        second: secondLinear,
        kernelBindings: norm && { resources: [norm.weight, norm.xNormed], bytes: 4 * K * (norm.xNormed ? 1 + M : 1) },
        label,
      });
    },
  };
}

/** The norm prologue's operands: given exactly to a variant with one, the sizes its M rows of K need. */
function checkNorm(device: GPUDevice, prologue: GemvPrologue, norm: GemvNorm | undefined, M: number, K: number): void {
  if ((prologue !== 'none') !== (norm !== undefined)) {
    throw new ArgumentError(`gemv_fp8: norm is given exactly to a variant with a norm prologue (this one has prologue ${prologue})`);
  }
  if (!norm) return;
  if (!(Number.isFinite(norm.eps) && norm.eps >= 0)) throw new ArgumentError(`gemv_fp8: the norm's eps must be a finite number >= 0, got ${norm.eps}`);
  if ((prologue === 'rmsnorm_write') !== (norm.xNormed !== undefined)) {
    throw new ArgumentError(`gemv_fp8: norm.xNormed is given exactly to the rmsnorm_write prologue (this one is ${prologue})`);
  }
  checkBindings(device, 'gemv_fp8', { 'norm.weight': [norm.weight, 4 * K], ...(norm.xNormed ? { 'norm.xNormed': [norm.xNormed, 4 * M * K] as const } : {}) }, `M=${M} K=${K}`);
}
