// act_quant for the W8A8 path: x [M, K] f32 -> e4m3 codes [M, K] (4 per u32) and scales
// [M, K/128], the inputs of gemv_fp8 / gemm_fp8 with numerics "w8a8". One call quantises the
// input of every Linear that reads it (q_a_proj and kv_a_proj_with_mqa share one).
// Shader: shaders/act_quant.wgsl (+ fp8_e4m3.wgsl); reference: act_quant.ref.ts.

import actQuantSource from '../../shaders/act_quant.wgsl?raw';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { BLOCK, checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type BufferResource, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { CachedPipeline } from '../gpu/pipeline_cache.ts';
import type { ActScaleFormat } from './act_quant.ref.ts';

export type { ActScaleFormat } from './act_quant.ref.ts';

export interface ActQuantArgs {
  M: number;
  /** A multiple of 128. */
  K: number;
  /** [M, K] f32. */
  x: GPUBuffer;
  /** [M, K] e4m3 codes, 4 per u32 (M * K bytes), written. */
  codes: GPUBuffer;
  /** [M, K/128] f32, written. */
  scales: GPUBuffer;
  label?: string;
}

export interface ActRoundArgs {
  M: number;
  /** A multiple of 128. */
  K: number;
  /** [M, K] f32, replaced in place by the FP8 value each element quantises to: e4m3(code) * scale. */
  x: GPUBuffer;
  /** When given, [M, K] f32 receives those values and x is left as it is. */
  rounded?: GPUBuffer;
  label?: string;
}

const WORKGROUP_SIZE = 64;

export interface ActQuantOptions {
  /**
   * How each group's scale is made: 'f32' amax / 448 as it comes (DeepSeek-V3), or 'ue8m0' rounded
   * up to a power of two (quantization_config.scale_fmt "ue8m0", DeepSeek-V3.1). Default 'f32'.
   */
  scaleFormat?: ActScaleFormat;
}

const AXES = { output: ['codes', 'dequantized', 'dequantized_copy'] } as const;
type Output = (typeof AXES.output)[number];

/** Bytes read and written; about 4 FLOPs per element (abs, max, divide, round). */
export function actQuantCost({ M, K }: { M: number; K: number }): Cost {
  return { bytes: 4 * M * K + M * K + (4 * M * K) / BLOCK, flops: 4 * M * K };
}

/** The pipeline of one output variant (codes + scales, or the dequantized values) and scale format (the UE8M0 override). */
function actQuantPipeline(ctx: KernelContext, output: Output, scaleFormat: ActScaleFormat = 'f32'): CachedPipeline {
  if (scaleFormat !== 'f32' && scaleFormat !== 'ue8m0') throw new ArgumentError(`act_quant: scaleFormat must be "f32" or "ue8m0", got ${JSON.stringify(scaleFormat)}`);
  return kernelPipeline(ctx.pipelines, {
    kernel: 'act_quant',
    source: actQuantSource,
    snippets: [{ name: 'fp8_e4m3.wgsl', code: fp8Source }],
    axes: AXES,
    variant: { output },
    constants: { WORKGROUP_SIZE, UE8M0: scaleFormat === 'ue8m0' ? 1 : 0 },
    bindings:
      output === 'codes' ? ['uniform', 'read-only-storage', 'storage', 'storage'] : output === 'dequantized' ? ['uniform', 'storage'] : ['uniform', 'read-only-storage', 'storage'],
  });
}

/** Throws unless M >= 1 and K is a whole number of 128-wide groups. */
function checkShape(label: string, M: number, K: number): void {
  checkCounts(label, { M });
  if (!Number.isInteger(K) || K < 1 || K % BLOCK !== 0) {
    throw new ArgumentError(`${label}: K must be a multiple of ${BLOCK} (the official act_quant asserts it), got K=${K}`);
  }
}

/** The params, bind group and dispatch of one call: one invocation per (row, group). */
function prepareCall(device: GPUDevice, pipeline: CachedPipeline, label: string, M: number, K: number, bindings: BufferResource[], cost: Cost): PreparedCall {
  const groups = K / BLOCK;
  const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32']);
  uniforms.write([M, K, groups]);
  return singleDispatch({ device, label, pipeline, uniforms, bindings, workgroups: Math.ceil((M * groups) / WORKGROUP_SIZE), cost });
}

/** x [M, K] f32 -> e4m3 codes and per-group scales, the W8A8 matmuls' input. */
export function createActQuant(ctx: KernelContext, options: ActQuantOptions = {}): Kernel<ActQuantArgs> {
  const pipeline = actQuantPipeline(ctx, 'codes', options.scaleFormat);
  const { device } = ctx.gpu;
  return {
    name: 'act_quant',
    prepare({ M, K, x, codes, scales, label = 'act_quant' }) {
      checkShape(label, M, K);
      checkBindings(device, label, { x: [x, 4 * M * K], codes: [codes, M * K], scales: [scales, (4 * M * K) / BLOCK] }, `M=${M} K=${K}`);
      return prepareCall(device, pipeline, label, M, K, [x, codes, scales], actQuantCost({ M, K }));
    },
  };
}

/**
 * act_quant's `dequantized` output: the activations the official fp8_gemm multiplies, written back
 * as f32 in place, for the kernels that read f32 inputs (the experts) on the W8A8 path.
 */
export function createActRound(ctx: KernelContext, options: ActQuantOptions = {}): Kernel<ActRoundArgs> {
  const inPlace = actQuantPipeline(ctx, 'dequantized', options.scaleFormat);
  const copy = actQuantPipeline(ctx, 'dequantized_copy', options.scaleFormat);
  const { device } = ctx.gpu;
  return {
    name: 'act_quant',
    prepare({ M, K, x, rounded, label = 'act_round' }) {
      checkShape(label, M, K);
      const cost = { bytes: 8 * M * K, flops: 4 * M * K };
      if (!rounded) {
        checkBindings(device, label, { x: [x, 4 * M * K] }, `M=${M} K=${K}`);
        return prepareCall(device, inPlace, label, M, K, [{ buffer: x, size: 4 * M * K }], cost);
      }
      if (rounded === x) throw new ArgumentError(`${label}: rounded must be another buffer than x (leave it out to round in place)`);
      checkBindings(device, label, { x: [x, 4 * M * K], rounded: [rounded, 4 * M * K] }, `M=${M} K=${K}`);
      return prepareCall(device, copy, label, M, K, [{ buffer: x, size: 4 * M * K }, { buffer: rounded, size: 4 * M * K }], cost);
    },
  };
}
