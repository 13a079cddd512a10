// The contract every kernel of src/kernels/ follows, and the plumbing they share.
//
//   shaders/<k>.wgsl       the WGSL
//   src/kernels/<k>.ts     export function create<K>(ctx: KernelContext, options?): Kernel<Args, Call>
//                          - options: the variant (closed lists of layouts/types) and tuning numbers,
//                            fixed at creation; the pipelines come from ctx.pipelines (compile-time keys)
//                          - prepare(args): checks every argument, writes the params uniform, builds
//                            the bind group(s) once, and returns a PreparedCall that only records
//                          - <k>Cost(shape): the bytes and FLOPs of a shape, for the benchmark
//   src/kernels/<k>.ref.ts the CPU reference the test compares with
//
// A plan prepares each call once and encodes it every step; per-step values (a position, the
// sampling settings) are rewritten through the call's own setter, one small uniform write.

import { ArgumentError, GpuLimitError } from '../errors.ts';
import type { Gpu } from './device.ts';
import { workgroupGrid } from './dispatch.ts';
import type { CachedPipeline, PipelineCache } from './pipeline_cache.ts';
import { composeShader, type Variant, type VariantAxes, type WgslSource } from './shader_compose.ts';

/** What a kernel is created with: the device (and its adapter facts) and the pipeline cache. */
export interface KernelContext {
  readonly gpu: Gpu;
  readonly pipelines: PipelineCache;
}

/** Unique bytes read and written, and FLOPs (2 per multiply-add): the benchmark's napkin math. */
export interface Cost {
  readonly bytes: number;
  readonly flops: number;
}

/** One prepared call: params written and bind groups built once; encode as often as needed. */
export interface PreparedCall extends Cost {
  /** Record the call's dispatches, in order, into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Free what the call owns (params, work buffers); the buffers it was given stay. */
  destroy(): void;
}

/** A created kernel: one variant, its pipelines cached, ready to prepare calls. */
export interface Kernel<Args, Call extends PreparedCall = PreparedCall> {
  /** The kernel's file name without extension, e.g. "rmsnorm". */
  readonly name: string;
  prepare(args: Args): Call;
}

/** The 128 x 128 blocks of FP8 weight scales (weight_scale_inv) and the 1 x 128 act_quant groups. */
export const BLOCK = 128;

/** A whole buffer, or a range of one. */
export type BufferResource = GPUBuffer | GPUBufferBinding;

export function asBinding(resource: BufferResource): GPUBufferBinding {
  return 'buffer' in resource ? resource : { buffer: resource };
}

/** Bytes a resource makes visible to a shader. */
export function bindingSize(resource: BufferResource): number {
  const b = asBinding(resource);
  return b.size ?? b.buffer.size - (b.offset ?? 0);
}

/** name -> [resource, bytes the call needs of it]; an absent resource is an error. */
export type BindingNeeds = Record<string, readonly [BufferResource | undefined, number]>;

/**
 * The one check of a call's buffers: each present, holding the bytes the shape needs, within the
 * adapter's largest binding. `shape` describes the arguments for the message ("M=1 N=64 K=32").
 */
export function checkBindings(device: GPUDevice, label: string, needs: BindingNeeds, shape = ''): void {
  const limit = device.limits.maxStorageBufferBindingSize;
  const what = shape ? `${shape} needs` : 'needs';
  for (const [name, [resource, bytes]] of Object.entries(needs)) {
    if (!resource) throw new ArgumentError(`${label}: ${name} is required`);
    const have = bindingSize(resource);
    if (have < bytes) throw new ArgumentError(`${label}: ${name} holds ${have} bytes, ${what} ${bytes}`);
    if (bytes > limit) {
      throw new GpuLimitError(`${label}: ${name} needs a ${bytes}-byte binding, over this GPU's maxStorageBufferBindingSize (${limit}); split the rows of the tensor`);
    }
  }
}

/** Throws an ArgumentError naming the first value that is not an integer >= min (default 1). */
export function checkCounts(label: string, counts: Record<string, number>, min = 1): void {
  for (const [name, value] of Object.entries(counts)) {
    if (!Number.isInteger(value) || value < min) {
      const what = min === 1 ? 'a positive integer' : min === 0 ? 'a non-negative integer' : `an integer >= ${min}`;
      throw new ArgumentError(`${label}: ${name} must be ${what}, got ${value}`);
    }
  }
}

/** Throws unless every element index of the shape fits the shaders' u32. */
export function checkU32Indices(label: string, counts: Record<string, number>): void {
  for (const [name, value] of Object.entries(counts)) {
    if (value >= 2 ** 32) throw new ArgumentError(`${label}: ${name} = ${value} overflows 32-bit element indices`);
  }
}

export type BindingKind = 'uniform' | 'storage' | 'read-only-storage';

/** Bind-group layout entries, binding i of kind kinds[i]; an undefined kind leaves binding i out. */
export function layoutEntries(kinds: readonly (BindingKind | undefined)[]): GPUBindGroupLayoutEntry[] {
  const entries: GPUBindGroupLayoutEntry[] = [];
  kinds.forEach((type, binding) => {
    if (type) entries.push({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
  });
  return entries;
}

export interface KernelPipeline {
  /** The kernel's file name without extension: the cache key's name and the composed header. */
  kernel: string;
  /** The WGSL of shaders/<kernel>.wgsl. */
  source: string;
  /** Shared snippets prepended in order (fp8_e4m3.wgsl, ...). */
  snippets?: readonly WgslSource[];
  /** The kernel's variant axes and the chosen value of each (see shader_compose.ts). */
  axes?: VariantAxes;
  variant?: Variant;
  /** WGSL `override` values: tuning numbers and compile-time facts, never runtime shapes. */
  constants?: Readonly<Record<string, number>>;
  /** Binding i's kind; undefined leaves it out of the layout. */
  bindings: readonly (BindingKind | undefined)[];
  /** Default "main". */
  entryPoint?: string;
}

/** The cached pipeline of a kernel variant: composed, laid out and compiled on first use only. */
export function kernelPipeline(cache: PipelineCache, spec: KernelPipeline): CachedPipeline {
  const variant = spec.variant ?? {};
  const constants = spec.constants ?? {};
  const key = { kernel: spec.entryPoint && spec.entryPoint !== 'main' ? `${spec.kernel}:${spec.entryPoint}` : spec.kernel, variant, constants };
  return cache.get(key, () => ({
    code: composeShader({ kernel: { name: `${spec.kernel}.wgsl`, code: spec.source }, snippets: spec.snippets, axes: spec.axes ?? {}, variant }),
    entries: layoutEntries(spec.bindings),
    entryPoint: spec.entryPoint,
  }));
}

/** A bind group of `pipeline`, binding i = resources[i]; an undefined resource leaves binding i out. */
export function createBindGroup(device: GPUDevice, label: string, pipeline: CachedPipeline, resources: readonly (BufferResource | undefined)[]): GPUBindGroup {
  const entries: GPUBindGroupEntry[] = [];
  resources.forEach((resource, binding) => {
    if (resource) entries.push({ binding, resource: asBinding(resource) });
  });
  return device.createBindGroup({ label, layout: pipeline.bindGroupLayout, entries });
}

export type UniformType = 'u32' | 'i32' | 'f32';

/**
 * A params uniform of 4-byte fields in the order of the shader's struct (padded to 16 bytes),
 * written whole or one field at a time.
 */
export class Uniforms {
  readonly buffer: GPUBuffer;
  private readonly device: GPUDevice;
  private readonly types: readonly UniformType[];

  constructor(device: GPUDevice, label: string, types: readonly UniformType[]) {
    this.device = device;
    this.types = types;
    this.buffer = device.createBuffer({ label: `${label}.params`, size: Math.max(16, Math.ceil(types.length / 4) * 16), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  }

  /** Writes every field; values in the order of the types. */
  write(values: readonly number[]): void {
    if (values.length !== this.types.length) throw new Error(`uniforms: ${values.length} values for ${this.types.length} fields`);
    const data = new ArrayBuffer(4 * values.length);
    values.forEach((value, i) => pack(data, i, this.types[i], value));
    this.device.queue.writeBuffer(this.buffer, 0, data);
  }

  /** Rewrites field `index` only (one 4-byte write). */
  set(index: number, value: number): void {
    const data = new ArrayBuffer(4);
    pack(data, 0, this.types[index], value);
    this.device.queue.writeBuffer(this.buffer, 4 * index, data);
  }

  destroy(): void {
    this.buffer.destroy();
  }
}

function pack(data: ArrayBuffer, index: number, type: UniformType | undefined, value: number): void {
  if (type === 'f32') new Float32Array(data, 4 * index, 1)[0] = value;
  else if (type === 'i32') new Int32Array(data, 4 * index, 1)[0] = value;
  else if (type === 'u32') new Uint32Array(data, 4 * index, 1)[0] = value;
  else throw new Error(`uniforms: no field ${index}`);
}

/** Anything that records into a compute pass. */
export interface Encodable {
  encode(pass: GPUComputePassEncoder): void;
}

/**
 * One dispatch of `pipeline` with `bindGroup`: `workgroups` spread over x and y when one
 * dimension cannot hold them (or an explicit [x, y, z] grid); none at all when the count is 0.
 */
export function dispatch(device: GPUDevice, pipeline: CachedPipeline, bindGroup: GPUBindGroup, workgroups: number | readonly [number, number, number]): Encodable {
  const grid = typeof workgroups === 'number' ? [...workgroupGrid(workgroups, device.limits.maxComputeWorkgroupsPerDimension), 1] : workgroups;
  const empty = grid.some((n) => n === 0);
  return {
    encode(pass) {
      if (empty) return;
      pass.setPipeline(pipeline.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    },
  };
}

/** A PreparedCall of recorded steps that owns `owned` (destroyed with it). */
export function preparedCall(cost: Cost, steps: readonly Encodable[], owned: readonly { destroy(): void }[]): PreparedCall {
  return {
    bytes: cost.bytes,
    flops: cost.flops,
    encode(pass) {
      for (const step of steps) step.encode(pass);
    },
    destroy() {
      for (const o of owned) o.destroy();
    },
  };
}

/** Calls recorded one after another as one call (its cost the sum); a single call is itself. */
export function sequence(calls: readonly PreparedCall[]): PreparedCall {
  if (calls.length === 1) return calls[0];
  const cost = calls.reduce((sum, c) => ({ bytes: sum.bytes + c.bytes, flops: sum.flops + c.flops }), { bytes: 0, flops: 0 });
  return preparedCall(cost, calls, calls);
}

export interface SingleDispatch {
  device: GPUDevice;
  label: string;
  pipeline: CachedPipeline;
  /** The params at binding 0, written by the caller. */
  uniforms: Uniforms;
  /** Bindings 1, 2, ... in order; an undefined entry leaves that binding out. */
  bindings: readonly (BufferResource | undefined)[];
  workgroups: number | readonly [number, number, number];
  cost: Cost;
}

/** The common case: one dispatch whose call owns its params uniform. */
export function singleDispatch({ device, label, pipeline, uniforms, bindings, workgroups, cost }: SingleDispatch): PreparedCall {
  const bindGroup = createBindGroup(device, label, pipeline, [uniforms.buffer, ...bindings]);
  return preparedCall(cost, [dispatch(device, pipeline, bindGroup, workgroups)], [uniforms]);
}

/** Record `calls` into one compute pass and submit it: for tests, benchmarks and one-off checks. */
export function submitPass(device: GPUDevice, ...calls: Encodable[]): void {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  for (const call of calls) call.encode(pass);
  pass.end();
  device.queue.submit([encoder.finish()]);
}
