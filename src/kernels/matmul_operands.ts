// The TS side of shaders/matmul_operands.wgsl, shared by the matrix kernels gemv_fp8 and
// gemm_fp8: variant names, bind-group layout, argument checks, params packing, bind group,
// dispatch grid, and the bytes / FLOPs of a shape for the benchmark.

import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import operandsSource from '../../shaders/matmul_operands.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { BLOCK, checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type BindingKind, type BufferResource, type Cost, type PreparedCall } from '../gpu/kernel.ts';
import type { CachedPipeline, PipelineCache } from '../gpu/pipeline_cache.ts';
import type { VariantAxes, WgslSource } from '../gpu/shader_compose.ts';

/** How W is stored: block-scaled e4m3 (the FP8 Linears), or bf16 / f32 (lm_head, router, eh_proj). */
export const WEIGHT_FORMATS = ['fp8', 'bf16', 'f32'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

/**
 * weight_only: x in f32, W dequantised (the official gemm_impl "bf16" path, run in f32);
 * w8a8: x quantised to e4m3 per 1x128 group by act_quant first (the official "fp8" path).
 */
export const MATMUL_NUMERICS = ['weight_only', 'w8a8'] as const;
export type MatmulNumerics = (typeof MATMUL_NUMERICS)[number];

/**
 * one: a call computes one Linear; two (gemv_fp8 only): two Linears of one format reading the same
 * x in one dispatch (q_a_proj and kv_a_proj_with_mqa), each into its own y.
 */
export const MATMUL_LINEARS = ['one', 'two'] as const;
export type MatmulLinears = (typeof MATMUL_LINEARS)[number];

/** The snippets every matrix kernel is composed with, in order. */
export const MATMUL_SNIPPETS: readonly WgslSource[] = [
  { name: 'fp8_e4m3.wgsl', code: fp8Source },
  { name: 'matmul_operands.wgsl', code: operandsSource },
];

/** A matrix kernel: its name ("gemv_fp8"), WGSL text and variant axes (weights, numerics, strategy). */
export interface MatmulKernel {
  readonly name: string;
  readonly source: string;
  readonly axes: VariantAxes;
  /** Snippets composed before the operands' (an `enable` directive must precede every declaration). */
  readonly leadingSnippets?: readonly WgslSource[];
}

/**
 * The cached pipeline of a matrix kernel for one variant and its override constants. `linears` is
 * an axis of the operands snippet itself, so every matrix kernel has it (one unless given).
 */
/** The snippets a matrix kernel is composed with: its leading ones, then the operands'. */
export function matmulSnippets(kernel: MatmulKernel): readonly WgslSource[] {
  return [...(kernel.leadingSnippets ?? []), ...MATMUL_SNIPPETS];
}

/** A matrix kernel's variant axes: its own and the operands' `linears`. */
export function matmulAxes(kernel: MatmulKernel): VariantAxes {
  return { ...kernel.axes, linears: MATMUL_LINEARS };
}

/** The first binding a matrix kernel may add past the operands' (gemv_fp8's norm prologue). */
export const KERNEL_BINDINGS_FROM = 9;

/**
 * `kernelBindings`: the kernel's own bindings after the operands', from KERNEL_BINDINGS_FROM on
 * (gemv_fp8's norm prologue).
 */
export function matmulPipeline(
  cache: PipelineCache,
  kernel: MatmulKernel,
  variant: OperandVariant & { strategy: string; linears?: MatmulLinears; prologue?: string },
  constants: Record<string, number>,
  kernelBindings: readonly (BindingKind | undefined)[] = [],
): CachedPipeline {
  const linears = variant.linears ?? 'one';
  return kernelPipeline(cache, {
    kernel: kernel.name,
    source: kernel.source,
    snippets: matmulSnippets(kernel),
    axes: matmulAxes(kernel),
    variant: { ...variant, linears },
    constants,
    bindings: withKernelBindings(operandBindings(variant, linears), kernelBindings),
  });
}

/** `operands` padded to KERNEL_BINDINGS_FROM, then the kernel's own (none: `operands` as it is). */
export function withKernelBindings<T>(operands: readonly (T | undefined)[], own: readonly (T | undefined)[]): (T | undefined)[] {
  if (own.length === 0) return [...operands];
  return [...operands, ...new Array<undefined>(KERNEL_BINDINGS_FROM - operands.length).fill(undefined), ...own];
}

export interface MatmulShape {
  /** Rows of x and y. */
  M: number;
  /** Rows of W, columns of y. */
  N: number;
  /** Columns of x and W. */
  K: number;
  /**
   * Elements between rows of y; default N. With yCol, a row band of a split W (rows yCol ..
   * yCol + N - 1 of the Linear) writes its columns of the whole y [M, yStride].
   */
  yStride?: number;
  /** The column of y that W's row 0 writes; default 0. */
  yCol?: number;
}

/** Elements of y from its first to its last written one: (M - 1) * yStride + yCol + N. */
export function yExtent({ M, N, yStride = N, yCol = 0 }: MatmulShape): number {
  return (M - 1) * yStride + yCol + N;
}

export interface OperandVariant {
  weights: WeightFormat;
  numerics: MatmulNumerics;
}

/** Buffers of one call. Each may be a whole buffer or a binding ({buffer, offset, size}). */
export interface MatmulBuffers {
  /** weight_only: [M, K] f32. w8a8: [M, K] e4m3 codes, 4 per u32, from act_quant. */
  x: BufferResource;
  /** fp8: [N, K] e4m3 bytes as in the checkpoint; bf16: [N, K] bf16; f32: [N, K] f32. */
  weight: BufferResource;
  /** fp8 only: weight_scale_inv [ceil(N/128), ceil(K/128)] f32. */
  weight_scale_inv?: BufferResource;
  /** w8a8 only: the act_quant scales [M, K/128] f32. */
  x_scale?: BufferResource;
  /** [M, N] f32 (or [M, yStride] with yCol), written. */
  y: BufferResource;
}

/** Throws unless the weights / numerics pair exists: W8A8 is defined for FP8 weights only. */
export function checkOperandVariant(kernel: string, { weights, numerics }: OperandVariant): void {
  if (numerics === 'w8a8' && weights !== 'fp8') {
    throw new ArgumentError(`${kernel}: w8a8 quantises activations for FP8 weights only; ${weights} weights run weight_only`);
  }
}

/**
 * The bindings of matmul_operands.wgsl for a variant: params, x, W, y, [scales], [x_scale], and with
 * two Linears W_b, y_b, [scales_b].
 */
export function operandBindings({ weights, numerics }: OperandVariant, linears: MatmulLinears = 'one'): (BindingKind | undefined)[] {
  const scales = weights === 'fp8' ? 'read-only-storage' : undefined;
  const one: (BindingKind | undefined)[] = ['uniform', 'read-only-storage', 'read-only-storage', 'storage', scales, numerics === 'w8a8' ? 'read-only-storage' : undefined];
  return linears === 'one' ? one : [...one, 'read-only-storage', 'storage', scales];
}

/** Storage buffers one call binds (what the adapter's maxStorageBuffersPerShaderStage must allow). */
export function operandStorageBuffers(variant: OperandVariant, linears: MatmulLinears = 'one'): number {
  return operandBindings(variant, linears).filter((kind) => kind !== undefined && kind !== 'uniform').length;
}

const WEIGHT_BYTES: Record<WeightFormat, number> = { fp8: 1, bf16: 2, f32: 4 };

/** Bytes each operand occupies (unpadded), keyed like MatmulBuffers; absent ones are not bound. */
export function operandBytes({ M, N, K }: MatmulShape, { weights, numerics }: OperandVariant): Record<keyof MatmulBuffers, number> {
  const kBlocks = Math.ceil(K / BLOCK);
  return {
    x: numerics === 'w8a8' ? M * K : 4 * M * K,
    weight: WEIGHT_BYTES[weights] * N * K,
    weight_scale_inv: weights === 'fp8' ? 4 * Math.ceil(N / BLOCK) * kBlocks : 0,
    x_scale: numerics === 'w8a8' ? 4 * M * kBlocks : 0,
    y: 4 * M * N,
  };
}

/** Unique bytes read and written, and 2 FLOPs per multiply-add, for the benchmark's napkin math. */
export function matmulCost(shape: MatmulShape, variant: OperandVariant): Cost {
  const bytes = Object.values(operandBytes(shape, variant)).reduce((a, b) => a + b, 0);
  return { bytes, flops: 2 * shape.M * shape.N * shape.K };
}

/** Checks the shape against the variant and every buffer against the bytes it must hold. */
export function checkMatmulArgs(
  kernel: string,
  device: GPUDevice,
  variant: OperandVariant,
  shape: MatmulShape,
  buffers: MatmulBuffers,
): void {
  const { M, N, K, yStride = N, yCol = 0 } = shape;
  checkCounts(kernel, { M, N, K, yStride });
  if (!Number.isInteger(yCol) || yCol < 0 || yCol + N > yStride) {
    throw new ArgumentError(`${kernel}: yCol ${yCol} + N ${N} must lie within yStride ${yStride}`);
  }
  if (variant.numerics === 'w8a8' && K % BLOCK !== 0) {
    throw new ArgumentError(
      `${kernel}: w8a8 needs K to be a multiple of ${BLOCK} (the official act_quant asserts it), got K=${K}; use weight_only`,
    );
  }
  const needed = operandBytes(shape, variant);
  const names = Object.keys(needed) as (keyof MatmulBuffers)[];
  for (const name of names) {
    if (needed[name] === 0 && buffers[name]) throw new ArgumentError(`${kernel}: ${name} is not used by ${variant.weights} weights, ${variant.numerics}`);
    if (needed[name] > 0 && !buffers[name]) throw new ArgumentError(`${kernel}: ${name} is required for ${variant.weights} weights, ${variant.numerics}`);
  }
  needed.y = 4 * yExtent(shape);
  const needs = Object.fromEntries(names.filter((name) => needed[name] > 0).map((name) => [name, [buffers[name], needed[name]] as const]));
  checkBindings(device, kernel, needs, `M=${M} N=${N} K=${K}`);
}

/** The second Linear of a two-Linears call: its shape (M and K are the first's), W, scales and y. */
export interface SecondLinear {
  shape: MatmulShape;
  buffers: Pick<MatmulBuffers, 'weight' | 'weight_scale_inv' | 'y'>;
  /** The first unit (invocation or workgroup, as the kernel says) that computes it; those before compute the first. */
  firstUnit: number;
}

export interface PrepareMatmulOptions {
  kernel: string;
  device: GPUDevice;
  pipeline: CachedPipeline;
  variant: OperandVariant;
  shape: MatmulShape;
  buffers: MatmulBuffers;
  /** Workgroups to dispatch (spread over x and y here). */
  workgroups: number;
  /** linears == two only. */
  second?: SecondLinear;
  /** The kernel's own bindings, from KERNEL_BINDINGS_FROM on, and the bytes they add to the cost. */
  kernelBindings?: { resources: readonly (BufferResource | undefined)[]; bytes: number };
  label?: string;
}

/** Write the params uniform and build the bind group once; the returned call only records. */
export function prepareMatmul(options: PrepareMatmulOptions): PreparedCall {
  const { device, variant, shape, buffers, workgroups, second } = options;
  const label = options.label ?? options.kernel;
  const values = [shape.M, shape.N, shape.K, Math.ceil(shape.K / BLOCK), shape.yStride ?? shape.N, shape.yCol ?? 0];
  if (second) values.push(second.shape.N, second.shape.yStride ?? second.shape.N, second.shape.yCol ?? 0, second.firstUnit);
  const uniforms = new Uniforms(device, label, values.map(() => 'u32' as const));
  uniforms.write(values);
  const operands = [buffers.x, buffers.weight, buffers.y, buffers.weight_scale_inv, buffers.x_scale];
  if (second) operands.push(second.buffers.weight, second.buffers.y, second.buffers.weight_scale_inv);
  // singleDispatch binds the uniforms at 0 and these from 1 on
  const bindings = withKernelBindings([undefined, ...operands], options.kernelBindings?.resources ?? []).slice(1);
  const cost = matmulCost(shape, variant);
  // x is read once for both
  const secondCost = second ? matmulCost(second.shape, variant) : { bytes: 0, flops: 0 };
  const xBytes = second ? operandBytes(second.shape, variant).x : 0;
  return singleDispatch({
    device,
    label,
    pipeline: options.pipeline,
    uniforms,
    bindings,
    workgroups,
    cost: { bytes: cost.bytes + secondCost.bytes - xBytes + (options.kernelBindings?.bytes ?? 0), flops: cost.flops + secondCost.flops },
  });
}
