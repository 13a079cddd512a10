// The TS side of shaders/matmul_operands.wgsl, shared by the matrix kernels gemv_fp8 and
// gemm_fp8: variant names, bind-group layout, argument checks, params packing, bind group,
// dispatch grid, and the bytes / FLOPs of a shape for the benchmark.

import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import operandsSource from '../../shaders/matmul_operands.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import type { CachedPipeline, PipelineCache } from './pipeline_cache.ts';
import { composeShader, type VariantAxes, type WgslSource } from './shader_compose.ts';

/** How W is stored: block-scaled e4m3 (the FP8 Linears), or bf16 / f32 (lm_head, router, eh_proj). */
export const WEIGHT_FORMATS = ['fp8', 'bf16', 'f32'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

/**
 * weight_only: x in f32, W dequantised (the official gemm_impl "bf16" path, run in f32);
 * w8a8: x quantised to e4m3 per 1x128 group by act_quant first (the official "fp8" path).
 */
export const MATMUL_NUMERICS = ['weight_only', 'w8a8'] as const;
export type MatmulNumerics = (typeof MATMUL_NUMERICS)[number];

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
}

/** The cached pipeline of a matrix kernel for one variant and its override constants. */
export function matmulPipeline(
  cache: PipelineCache,
  kernel: MatmulKernel,
  variant: OperandVariant & { strategy: string },
  constants: Record<string, number>,
): CachedPipeline {
  return cache.get({ kernel: kernel.name, variant: { ...variant }, constants }, () => ({
    code: composeShader({
      kernel: { name: `${kernel.name}.wgsl`, code: kernel.source },
      snippets: MATMUL_SNIPPETS,
      axes: kernel.axes,
      variant: { ...variant },
    }),
    entries: operandLayoutEntries(variant),
  }));
}

/** The 128 x 128 weight scale blocks and the 1 x 128 act_quant groups. */
export const BLOCK = 128;

export interface MatmulShape {
  /** Rows of x and y. */
  M: number;
  /** Rows of W, columns of y. */
  N: number;
  /** Columns of x and W. */
  K: number;
}

export interface OperandVariant {
  weights: WeightFormat;
  numerics: MatmulNumerics;
}

/** Buffers of one call. Each may be a whole buffer or a binding ({buffer, offset, size}). */
export interface MatmulBuffers {
  /** weight_only: [M, K] f32. w8a8: [M, K] e4m3 codes, 4 per u32, from act_quant. */
  x: GPUBuffer | GPUBufferBinding;
  /** fp8: [N, K] e4m3 bytes as in the checkpoint; bf16: [N, K] bf16; f32: [N, K] f32. */
  weight: GPUBuffer | GPUBufferBinding;
  /** fp8 only: weight_scale_inv [ceil(N/128), ceil(K/128)] f32. */
  weight_scale_inv?: GPUBuffer | GPUBufferBinding;
  /** w8a8 only: the act_quant scales [M, K/128] f32. */
  x_scale?: GPUBuffer | GPUBufferBinding;
  /** [M, N] f32, written. */
  y: GPUBuffer | GPUBufferBinding;
}

/** One prepared call: params written and bind group built once; encode as often as needed. */
export interface PreparedCall {
  readonly bytes: number;
  readonly flops: number;
  /** Record the dispatch into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Free the params buffer. */
  destroy(): void;
}

/** Throws unless the weights / numerics pair exists: W8A8 is defined for FP8 weights only. */
export function checkOperandVariant(kernel: string, { weights, numerics }: OperandVariant): void {
  if (numerics === 'w8a8' && weights !== 'fp8') {
    throw new ArgumentError(`${kernel}: w8a8 quantises activations for FP8 weights only; ${weights} weights run weight_only`);
  }
}

const ro = (binding: number): GPUBindGroupLayoutEntry => ({
  binding,
  visibility: GPUShaderStage.COMPUTE,
  buffer: { type: 'read-only-storage' },
});

/** The bind-group layout of matmul_operands.wgsl for a variant. */
export function operandLayoutEntries({ weights, numerics }: OperandVariant): GPUBindGroupLayoutEntry[] {
  const entries: GPUBindGroupLayoutEntry[] = [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
    ro(1),
    ro(2),
    { binding: 3, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
  ];
  if (weights === 'fp8') entries.push(ro(4));
  if (numerics === 'w8a8') entries.push(ro(5));
  return entries;
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
export function matmulCost(shape: MatmulShape, variant: OperandVariant): { bytes: number; flops: number } {
  const bytes = Object.values(operandBytes(shape, variant)).reduce((a, b) => a + b, 0);
  return { bytes, flops: 2 * shape.M * shape.N * shape.K };
}

function asBinding(resource: GPUBuffer | GPUBufferBinding): GPUBufferBinding {
  return 'buffer' in resource ? resource : { buffer: resource };
}

function bindingSize(b: GPUBufferBinding): number {
  return b.size ?? b.buffer.size - (b.offset ?? 0);
}

/** Checks the shape against the variant and every buffer against the bytes it must hold. */
export function checkMatmulArgs(
  kernel: string,
  device: GPUDevice,
  variant: OperandVariant,
  shape: MatmulShape,
  buffers: MatmulBuffers,
): void {
  const { M, N, K } = shape;
  for (const [name, value] of Object.entries(shape)) {
    if (!Number.isInteger(value) || value < 1) throw new ArgumentError(`${kernel}: ${name} must be a positive integer, got ${value}`);
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
  const limit = device.limits.maxStorageBufferBindingSize;
  for (const name of names) {
    const resource = buffers[name];
    if (!resource) continue;
    const have = bindingSize(asBinding(resource));
    if (have < needed[name]) {
      throw new ArgumentError(`${kernel}: ${name} holds ${have} bytes, M=${M} N=${N} K=${K} needs ${needed[name]}`);
    }
    if (needed[name] > limit) {
      throw new GpuLimitError(
        `${kernel}: ${name} needs a ${needed[name]}-byte binding, over this GPU's maxStorageBufferBindingSize (${limit}); split the rows of W`,
      );
    }
  }
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
  label?: string;
}

/** Write the params uniform and build the bind group once; the returned call only records. */
export function prepareMatmul(options: PrepareMatmulOptions): PreparedCall {
  const { device, variant, shape, buffers, workgroups } = options;
  const label = options.label ?? options.kernel;
  const params = device.createBuffer({ label: `${label}.params`, size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, new Uint32Array([shape.M, shape.N, shape.K, Math.ceil(shape.K / BLOCK)]));
  const entries: GPUBindGroupEntry[] = [
    { binding: 0, resource: { buffer: params } },
    { binding: 1, resource: asBinding(buffers.x) },
    { binding: 2, resource: asBinding(buffers.weight) },
    { binding: 3, resource: asBinding(buffers.y) },
  ];
  if (buffers.weight_scale_inv) entries.push({ binding: 4, resource: asBinding(buffers.weight_scale_inv) });
  if (buffers.x_scale) entries.push({ binding: 5, resource: asBinding(buffers.x_scale) });
  const bindGroup = device.createBindGroup({ label, layout: options.pipeline.bindGroupLayout, entries });
  const [gx, gy] = workgroupGrid(workgroups, device.limits.maxComputeWorkgroupsPerDimension);
  return {
    ...matmulCost(shape, variant),
    encode(pass) {
      pass.setPipeline(options.pipeline.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
    destroy() {
      params.destroy();
    },
  };
}
