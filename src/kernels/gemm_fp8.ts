// GEMM for prefill (M rows of tokens, e.g. up to 512 per chunk): y = x W^T with W block-scaled
// FP8, bf16 or f32, register-tiled. Shader: shaders/gemm_fp8.wgsl (+ fp8_e4m3.wgsl,
// matmul_operands.wgsl); reference: gemm_fp8.ref.ts (matmulRef).

import gemmSource from '../../shaders/gemm_fp8.wgsl?raw';
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
 * thread_tile: each invocation a tile of y of up to 32 x 8 straight from memory, no barrier (CPU adapters);
 * workgroup_tile: 64 x 64 tiles staged in workgroup memory (GPUs).
 */
export const GEMM_STRATEGIES = ['thread_tile', 'workgroup_tile'] as const;
export type GemmStrategy = (typeof GEMM_STRATEGIES)[number];

export interface GemmVariant {
  weights: WeightFormat;
  numerics: MatmulNumerics;
  strategy: GemmStrategy;
}

export interface GemmOptions {
  /** Default fp8. */
  weights?: WeightFormat;
  /** Default weight_only. */
  numerics?: MatmulNumerics;
  /** Default: thread_tile on a CPU adapter (adapter.isSoftware), else workgroup_tile. */
  strategy?: GemmStrategy;
  /** thread_tile only: invocations per workgroup, default 64 (workgroup_tile is fixed at 16 x 16). */
  workgroupSize?: number;
}

export interface GemmArgs extends MatmulShape, MatmulBuffers {
  label?: string;
}

export interface Gemm extends Kernel<GemmArgs> {
  readonly variant: GemmVariant;
  /** Check the arguments, write the params, build the bind group: once per plan, not per chunk. */
  prepare(args: GemmArgs): PreparedCall;
}

const KERNEL = { name: 'gemm_fp8', source: gemmSource, axes: { weights: WEIGHT_FORMATS, numerics: MATMUL_NUMERICS, strategy: GEMM_STRATEGIES } };
const THREAD_TILE_N = 8; // y columns per invocation, thread_tile
const TILE = 64; // y tile per workgroup, workgroup_tile

/**
 * thread_tile: row groups of 4 per tile (ROW_GROUPS). A tall tile decodes each weight once for
 * more rows, but its unrolled code compiles slowly on a CPU adapter (SwiftShader, measured: 0.2 s
 * for 4 rows, 2.5-3.4 s for 32), a cost paid at the first prefill of a session. So chunks of
 * fewer than 128 rows (the shipped model's 64-token prefill chunks) take 4-row tiles, and only
 * large chunks, whose GEMMs dwarf the compile, take 32-row tiles.
 */
function rowGroups(M: number): number {
  return M >= 128 ? 8 : 1;
}

export function createGemm(ctx: KernelContext, options: GemmOptions = {}): Gemm {
  const { gpu, pipelines } = ctx;
  const variant: GemmVariant = {
    weights: options.weights ?? 'fp8',
    numerics: options.numerics ?? 'weight_only',
    strategy: options.strategy ?? (gpu.adapter.isSoftware ? 'thread_tile' : 'workgroup_tile'),
  };
  checkOperandVariant('gemm_fp8', variant);
  const tiled = variant.strategy === 'workgroup_tile';
  if (tiled && options.workgroupSize !== undefined) {
    throw new ArgumentError('gemm_fp8: workgroup_tile has a fixed 16 x 16 workgroup; workgroupSize is for thread_tile');
  }
  const workgroupSize = options.workgroupSize ?? 64;
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1) throw new ArgumentError(`gemm_fp8: workgroupSize ${workgroupSize} must be a positive integer`);
  // thread_tile: K % 4 == 0 (every real checkpoint) takes the loaders without splicing and
  // masking (K_ALIGNED of matmul_operands.wgsl), and the tile height has a class per row count.
  // (workgroup_tile stages K in steps of 8 and relies on the masking past K, so it never takes
  // K_ALIGNED.) One pipeline per such compile-time fact, made on first use; never per M, N or K.
  const pipeline = (M: number, K: number) =>
    matmulPipeline(pipelines, KERNEL, variant, tiled ? {} : { WORKGROUP_SIZE: workgroupSize, ROW_GROUPS: rowGroups(M), K_ALIGNED: K % 4 === 0 ? 1 : 0 });

  return {
    name: 'gemm_fp8',
    variant,
    prepare(args) {
      const { M, N, K, yStride, yCol, label } = args;
      const shape = { M, N, K, yStride, yCol };
      checkMatmulArgs('gemm_fp8', gpu.device, variant, shape, args);
      const workgroups = tiled
        ? Math.ceil(M / TILE) * Math.ceil(N / TILE)
        : Math.ceil((Math.ceil(M / (4 * rowGroups(M))) * Math.ceil(N / THREAD_TILE_N)) / workgroupSize);
      return prepareMatmul({
        kernel: 'gemm_fp8',
        device: gpu.device,
        pipeline: pipeline(M, K),
        variant,
        shape,
        buffers: args,
        workgroups,
        label,
      });
    },
  };
}
