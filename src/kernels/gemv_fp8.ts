// GEMV for decode (M = 1 .. 4 rows): y = x W^T with W block-scaled FP8, bf16 or f32.
// Shader: shaders/gemv_fp8.wgsl (+ fp8_e4m3.wgsl, matmul_operands.wgsl); reference:
// gemm_fp8.ref.ts (matmulRef). Used by the decode plan for every Linear, lm_head and the router.

import gemvSource from '../../shaders/gemv_fp8.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import type { Kernel, KernelContext, PreparedCall } from '../gpu/kernel.ts';
import {
  checkMatmulArgs,
  checkOperandVariant,
  MATMUL_NUMERICS,
  matmulPipeline,
  prepareMatmul,
  WEIGHT_FORMATS,
  type MatmulBuffers,
  type MatmulNumerics,
  type MatmulShape,
  type WeightFormat,
} from './matmul_operands.ts';

export type { MatmulBuffers, MatmulShape } from './matmul_operands.ts';

/**
 * thread_per_4_rows: one invocation per 4 output columns (rows of W), no barrier (CPU adapters);
 * workgroup_per_row: one workgroup per output column, coalesced loads (GPUs).
 */
export const GEMV_STRATEGIES = ['thread_per_4_rows', 'workgroup_per_row'] as const;
export type GemvStrategy = (typeof GEMV_STRATEGIES)[number];

/** The most rows of x one call takes (the current token plus the MTP draft fits easily). */
export const GEMV_MAX_ROWS = 4;

export interface GemvVariant {
  weights: WeightFormat;
  numerics: MatmulNumerics;
  strategy: GemvStrategy;
}

export interface GemvOptions {
  /** Default fp8. */
  weights?: WeightFormat;
  /** Default weight_only. */
  numerics?: MatmulNumerics;
  /** Default: thread_per_4_rows on a CPU adapter (adapter.isSoftware), else workgroup_per_row. */
  strategy?: GemvStrategy;
  /** Invocations per workgroup, default 64; a power of two for workgroup_per_row. A tuning number. */
  workgroupSize?: number;
}

export interface GemvArgs extends MatmulShape, MatmulBuffers {
  label?: string;
}

export interface Gemv extends Kernel<GemvArgs> {
  readonly variant: GemvVariant;
  readonly workgroupSize: number;
  /** Check the arguments, write the params, build the bind group: once per plan, not per step. */
  prepare(args: GemvArgs): PreparedCall;
}

const KERNEL = { name: 'gemv_fp8', source: gemvSource, axes: { weights: WEIGHT_FORMATS, numerics: MATMUL_NUMERICS, strategy: GEMV_STRATEGIES } };

export function createGemv(ctx: KernelContext, options: GemvOptions = {}): Gemv {
  const { gpu, pipelines } = ctx;
  const variant: GemvVariant = {
    weights: options.weights ?? 'fp8',
    numerics: options.numerics ?? 'weight_only',
    strategy: options.strategy ?? (gpu.adapter.isSoftware ? 'thread_per_4_rows' : 'workgroup_per_row'),
  };
  checkOperandVariant('gemv_fp8', variant);
  const workgroupSize = options.workgroupSize ?? 64;
  const perRow = variant.strategy === 'workgroup_per_row';
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1 || (perRow && (workgroupSize & (workgroupSize - 1)) !== 0)) {
    throw new ArgumentError(`gemv_fp8: workgroupSize ${workgroupSize} must be a positive integer${perRow ? ', a power of two' : ''}`);
  }
  // One pipeline per row count ROWS in {1, 2, 4}, the smallest >= M: a compile-time capacity, so
  // the cache key never holds M itself.
  // K % 4 == 0 takes the loaders without splicing and masking (K_ALIGNED of matmul_operands.wgsl).
  const pipelineFor = (rows: number, K: number) =>
    matmulPipeline(pipelines, KERNEL, variant, { WORKGROUP_SIZE: workgroupSize, ROWS: rows, K_ALIGNED: K % 4 === 0 ? 1 : 0 });

  return {
    name: 'gemv_fp8',
    variant,
    workgroupSize,
    prepare(args) {
      const { M, N, K, yStride, yCol, label } = args;
      const shape = { M, N, K, yStride, yCol };
      if (M > GEMV_MAX_ROWS) throw new ArgumentError(`gemv_fp8: M=${M} rows, at most ${GEMV_MAX_ROWS}; use gemm_fp8 for more`);
      checkMatmulArgs('gemv_fp8', gpu.device, variant, shape, args);
      const pipeline = pipelineFor(M <= 2 ? M : GEMV_MAX_ROWS, K);
      return prepareMatmul({
        kernel: 'gemv_fp8',
        device: gpu.device,
        pipeline,
        variant,
        shape,
        buffers: args,
        workgroups: perRow ? N : Math.ceil(N / (4 * workgroupSize)),
        label,
      });
    },
  };
}
