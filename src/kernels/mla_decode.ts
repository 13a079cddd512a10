// MLA decode attention over the latent cache, absorbed form (DEEPSEEK_V3_MATH.md 4.4): pipelines,
// bind groups, params, the two dispatches (per-split partials, then their reduction), bytes/FLOPs.
// Shaders: shaders/mla_decode.wgsl (pass 1), shaders/mla_decode_reduce.wgsl (pass 2);
// reference: mla_decode.ref.ts. q_lat = q_nope @ W_UK and o = W_UV @ o_lat are matmuls done elsewhere.
// Query row r sits at position startPos + r and attends causally to 0 .. startPos + r, so the same
// kernel serves the decode step (1 row), the MTP verify step (2 rows) and a prefill chunk (T rows,
// attending to the cached prefix and to itself). For long prefill chunks mla_prefill shares each
// key tile across 16 query rows and reads the cache fewer times.

import partialSource from '../../shaders/mla_decode.wgsl?raw';
import reduceSource from '../../shaders/mla_decode_reduce.wgsl?raw';
import { workgroupGrid } from '../gpu/dispatch.ts';
import { checkMlaArgs, checkStartPos } from './mla_args.ts';
import type { MlaDecodeShape } from './mla_decode.ref.ts';

export type { MlaDecodeShape } from './mla_decode.ref.ts';

export interface MlaDecodeVariant {
  /** A CPU adapter (AdapterReport.isSoftware): one invocation per (split, row, head), no barrier. */
  isSoftware: boolean;
}

interface Stage {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
}

export interface MlaDecodePipeline {
  readonly variant: MlaDecodeVariant;
  readonly partial: Stage;
  readonly reduce: Stage;
  /** Cache positions per split. */
  readonly chunk: number;
  /** Invocations per workgroup of pass 1. */
  readonly workgroupSize: number;
}

/** Cache positions per split (flash-decoding); at most MAX_CHUNK of the shader. */
export const MLA_DECODE_CHUNK = 256;
const WG_PER_ITEM = 64; // GPUs: invocations sharing one (split, row, head)
const WG_ITEMS = 16; // CPU adapters: (split, row, head) items per workgroup (small: a CPU adapter runs a workgroup on one core)
const WG_REDUCE = 64;
const PARAMS_BYTES = 32;

function stage(device: GPUDevice, name: string, code: string, entryPoint: string, storage: GPUBufferBindingType[], constants: Record<string, number>): Stage {
  const entries: GPUBindGroupLayoutEntry[] = [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
    ...storage.map((type, i) => ({ binding: i + 1, visibility: GPUShaderStage.COMPUTE, buffer: { type } })),
  ];
  const layout = device.createBindGroupLayout({ label: name, entries });
  const pipeline = device.createComputePipeline({
    label: name,
    layout: device.createPipelineLayout({ label: name, bindGroupLayouts: [layout] }),
    compute: { module: device.createShaderModule({ label: `${entryPoint}.wgsl`, code }), entryPoint, constants },
  });
  return { pipeline, layout };
}

/** Builds both pipelines of one variant. */
export function createMlaDecodePipeline(device: GPUDevice, variant: MlaDecodeVariant): MlaDecodePipeline {
  const workgroupSize = variant.isSoftware ? WG_ITEMS : WG_PER_ITEM;
  const name = `mla_decode${variant.isSoftware ? '/item-per-thread' : ''}`;
  const partial = stage(device, name, partialSource, 'mla_decode', ['read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'storage'], {
    WG: workgroupSize,
    ONE_PER_INVOCATION: variant.isSoftware ? 1 : 0,
    CHUNK: MLA_DECODE_CHUNK,
  });
  const reduce = stage(device, 'mla_decode_reduce', reduceSource, 'mla_decode_reduce', ['read-only-storage', 'read-only-storage', 'storage'], { WG: WG_REDUCE });
  return { variant, partial, reduce, chunk: MLA_DECODE_CHUNK, workgroupSize };
}

export interface MlaDecodeCostShape extends MlaDecodeShape {
  startPos: number;
}

/**
 * Bytes and FLOPs for the benchmark. Bytes: the cache rows 0 .. startPos + rows - 1 read once (on a
 * GPU the heads re-read them from L2), q_lat and q_pe read, the partials written and read back, o_lat
 * written. FLOPs per (row, head, attended position): 2 (rkv + dr) for the score, 2 rkv for the
 * weighted sum; plus 2 per partial value in the reduction.
 */
export function mlaDecodeCost({ rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos }: MlaDecodeCostShape, chunk = MLA_DECODE_CHUNK): { bytes: number; flops: number } {
  const positions = startPos + rows;
  const splits = Math.ceil(positions / chunk);
  let attended = 0;
  for (let r = 0; r < rows; r++) attended += startPos + r + 1;
  const partials = rows * heads * splits * (rkv + 2);
  return {
    bytes: 4 * (positions * (rkv + dr) + rows * heads * (rkv + dr) + 2 * partials + rows * heads * rkv),
    flops: heads * attended * (2 * (rkv + dr) + 2 * rkv) + 2 * partials,
  };
}

export interface MlaDecodeArgs extends MlaDecodeShape {
  /** Cache rows the layer holds (the cache binding's length). */
  maxT: number;
  /** Absolute position of query row 0 (row r attends to 0 .. startPos + r); changed with setStartPos. */
  startPos: number;
  /** softmax_scale of the config (dq^-0.5 * mscale^2). */
  softmaxScale: number;
  /** [rows, heads, kvLoraRank] f32: q_nope @ W_UK. */
  qLat: GPUBuffer;
  /** [rows, heads, ropeDim] f32, RoPE applied. */
  qPe: GPUBuffer;
  /** [maxT, kvLoraRank + ropeDim] f32 at cacheByteOffset: row t = [c_hat(t) | k_pe(t)]. */
  cache: GPUBuffer;
  /** Where this layer's cache starts (a multiple of minStorageBufferOffsetAlignment). Default 0. */
  cacheByteOffset?: number;
  /** [rows, heads, kvLoraRank] f32 output. */
  oLat: GPUBuffer;
  label?: string;
}

export interface PreparedMlaDecode {
  /** For the current startPos. */
  readonly bytes: number;
  readonly flops: number;
  /** Rewrites the params for a new step; encode after it (the split count is fixed at encode). */
  setStartPos(startPos: number): void;
  /** Record both dispatches into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Free the params and partial buffers. */
  destroy(): void;
}

/** Validates the arguments, allocates the partials for maxT, writes the params and builds the bind groups once. */
export function prepareMlaDecode(device: GPUDevice, kernel: MlaDecodePipeline, args: MlaDecodeArgs): PreparedMlaDecode {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
  const label = args.label ?? 'mla_decode';
  const shape = { rows, heads, kvLoraRank: rkv, ropeDim: dr };
  checkMlaArgs(device, label, args);
  checkStartPos(label, args.startPos, rows, maxT);

  const maxSplits = Math.ceil(maxT / kernel.chunk);
  const partO = device.createBuffer({ label: `${label}.part_o`, size: 4 * rows * heads * maxSplits * rkv, usage: GPUBufferUsage.STORAGE });
  const partMl = device.createBuffer({ label: `${label}.part_ml`, size: 8 * rows * heads * maxSplits, usage: GPUBufferUsage.STORAGE });
  const paramsBuffer = device.createBuffer({ label: `${label}.params`, size: PARAMS_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });

  const partialGroup = device.createBindGroup({
    label,
    layout: kernel.partial.layout,
    entries: [
      { binding: 0, resource: { buffer: paramsBuffer } },
      { binding: 1, resource: { buffer: args.qLat, size: 4 * rows * heads * rkv } },
      // dr = 0 would be an empty binding: bind one vec4 that is never read.
      { binding: 2, resource: { buffer: args.qPe, size: 4 * Math.max(4, rows * heads * dr) } },
      { binding: 3, resource: { buffer: args.cache, offset: args.cacheByteOffset ?? 0, size: 4 * maxT * (rkv + dr) } },
      { binding: 4, resource: { buffer: partO } },
      { binding: 5, resource: { buffer: partMl } },
    ],
  });
  const reduceGroup = device.createBindGroup({
    label: `${label}.reduce`,
    layout: kernel.reduce.layout,
    entries: [
      { binding: 0, resource: { buffer: paramsBuffer } },
      { binding: 1, resource: { buffer: partO } },
      { binding: 2, resource: { buffer: partMl } },
      { binding: 3, resource: { buffer: args.oLat, size: 4 * rows * heads * rkv } },
    ],
  });

  const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
  const reduceGrid = workgroupGrid(Math.ceil((rows * heads * rkv) / WG_REDUCE), maxGroups);
  let startPos = 0;
  let partialGrid: [number, number] = [0, 0];
  let cost = { bytes: 0, flops: 0 };

  function setStartPos(next: number): void {
    checkStartPos(label, next, rows, maxT);
    startPos = next;
    const splits = Math.ceil((startPos + rows) / kernel.chunk);
    const items = splits * rows * heads;
    partialGrid = workgroupGrid(kernel.variant.isSoftware ? Math.ceil(items / kernel.workgroupSize) : items, maxGroups);
    cost = mlaDecodeCost({ ...shape, startPos }, kernel.chunk);
    const params = new ArrayBuffer(PARAMS_BYTES);
    new Uint32Array(params, 0, 6).set([rows, heads, rkv, dr, startPos, splits]);
    new Float32Array(params, 24, 1)[0] = args.softmaxScale;
    device.queue.writeBuffer(paramsBuffer, 0, params);
  }
  setStartPos(args.startPos);

  return {
    get bytes() {
      return cost.bytes;
    },
    get flops() {
      return cost.flops;
    },
    setStartPos,
    encode(pass) {
      pass.setPipeline(kernel.partial.pipeline);
      pass.setBindGroup(0, partialGroup);
      pass.dispatchWorkgroups(partialGrid[0], partialGrid[1]);
      pass.setPipeline(kernel.reduce.pipeline);
      pass.setBindGroup(0, reduceGroup);
      pass.dispatchWorkgroups(reduceGrid[0], reduceGrid[1]);
    },
    destroy() {
      for (const b of [paramsBuffer, partO, partMl]) b.destroy();
    },
  };
}
