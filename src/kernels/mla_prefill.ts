// MLA prefill attention over the latent cache, absorbed form (DEEPSEEK_V3_MATH.md 4.4): pipeline,
// bind group, params, the one dispatch, bytes/FLOPs. Shader: shaders/mla_prefill.wgsl; reference:
// mla_prefill.ref.ts. A chunk of T query rows at startPos .. startPos + T - 1 (cache rows already
// written) attends to the cached prefix and to itself; row s sees 0 .. startPos + s. mla_decode
// computes the same thing with one workgroup per (row, head); this kernel shares each key tile
// across BQ query rows (flash attention), so long chunks read the cache T / BQ times fewer.
// q_lat = q_nope @ W_UK and o = W_UV @ o_lat are matmuls done elsewhere.

import shaderSource from '../../shaders/mla_prefill.wgsl?raw';
import { UnsupportedConfigError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import type { CachedPipeline, PipelineCache } from './pipeline_cache.ts';
import type { MlaPrefillShape } from './mla_prefill.ref.ts';
import { checkMlaArgs, checkStartPos } from './mla_args.ts';

export type { MlaPrefillShape } from './mla_prefill.ref.ts';

export interface MlaPrefillVariant {
  /** A CPU adapter (AdapterReport.isSoftware): one invocation per (row, head), no barrier. */
  isSoftware: boolean;
}

export interface MlaPrefillPipeline {
  readonly variant: MlaPrefillVariant;
  readonly kernel: CachedPipeline;
  /** kv_lora_rank the pipeline was built for (the GPU variant's workgroup covers its columns). */
  readonly kvLoraRank: number;
  /** Invocations per workgroup. */
  readonly workgroupSize: number;
}

/** Query rows per workgroup of the GPU variant (BQ of the shader). */
export const MLA_PREFILL_BQ = 16;
const MAX_COLS = 2; // latent vec4 columns per invocation of the GPU variant (MAX_COLS of the shader)
const WG_MIN = 64;
const WG_ITEMS = 16; // CPU adapters: (row, head) items per workgroup, as mla_decode
const PARAMS_BYTES = 32;

/**
 * Builds (or takes from the cache) the pipeline of one variant. The GPU variant's workgroup holds
 * the whole o_lat tile in registers, MAX_COLS vec4 columns per invocation, so its size follows
 * kv_lora_rank (64 for V3's 512 and below).
 */
export function createMlaPrefillPipeline(cache: PipelineCache, variant: MlaPrefillVariant & { kvLoraRank: number }): MlaPrefillPipeline {
  const { kvLoraRank: rkv, isSoftware } = variant;
  if (!(Number.isInteger(rkv) && rkv > 0 && rkv % 4 === 0)) {
    throw new UnsupportedConfigError('kv_lora_rank', `mla_prefill: kv_lora_rank ${rkv} must be a positive multiple of 4`);
  }
  const columnsWg = Math.ceil(Math.ceil(rkv / 4 / MAX_COLS) / 32) * 32;
  const workgroupSize = isSoftware ? WG_ITEMS : Math.max(WG_MIN, columnsWg);
  const maxWg = cache.device.limits.maxComputeInvocationsPerWorkgroup;
  if (workgroupSize > maxWg) {
    throw new UnsupportedConfigError('kv_lora_rank', `mla_prefill: kv_lora_rank ${rkv} needs ${workgroupSize} invocations per workgroup, the device allows ${maxWg}`);
  }
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
  const kernel = cache.get({ kernel: 'mla_prefill', variant: {}, constants: { WG: workgroupSize, ONE_PER_INVOCATION: isSoftware ? 1 : 0 } }, () => ({
    code: shaderSource,
    entryPoint: 'mla_prefill',
    entries: [entry(0, 'uniform'), entry(1, 'read-only-storage'), entry(2, 'read-only-storage'), entry(3, 'read-only-storage'), entry(4, 'storage')],
  }));
  return { variant: { isSoftware }, kernel, kvLoraRank: rkv, workgroupSize };
}

export interface MlaPrefillCostShape extends MlaPrefillShape {
  startPos: number;
}

/**
 * Bytes and FLOPs for the benchmark. Bytes: the cache rows 0 .. startPos + rows - 1 read once per
 * query tile of BQ rows (on a GPU the heads of a tile re-read them from L2), q_lat and q_pe read,
 * o_lat written. FLOPs per (row, head, attended position): 2 (rkv + dr) for the score, 2 rkv for the
 * weighted sum.
 */
export function mlaPrefillCost({ rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos }: MlaPrefillCostShape): { bytes: number; flops: number } {
  let cacheRows = 0;
  for (let r0 = 0; r0 < rows; r0 += MLA_PREFILL_BQ) cacheRows += startPos + Math.min(r0 + MLA_PREFILL_BQ, rows);
  let attended = 0;
  for (let r = 0; r < rows; r++) attended += startPos + r + 1;
  return {
    bytes: 4 * (cacheRows * (rkv + dr) + rows * heads * (rkv + dr) + rows * heads * rkv),
    flops: heads * attended * (2 * (rkv + dr) + 2 * rkv),
  };
}

export interface MlaPrefillArgs extends MlaPrefillShape {
  /** Cache rows the layer holds (the cache binding's length). */
  maxT: number;
  /** Absolute position of query row 0 (row s attends to 0 .. startPos + s); changed with setStartPos. */
  startPos: number;
  /** softmax_scale of the config (dq^-0.5 * mscale^2). */
  softmaxScale: number;
  /** [rows, heads, kvLoraRank] f32: q_nope @ W_UK. */
  qLat: GPUBuffer;
  /** [rows, heads, ropeDim] f32, RoPE applied. */
  qPe: GPUBuffer;
  /** [maxT, kvLoraRank + ropeDim] f32 at cacheByteOffset: row t = [c_hat(t) | k_pe(t)]; rows 0 .. startPos + rows - 1 written. */
  cache: GPUBuffer;
  /** Where this layer's cache starts (a multiple of minStorageBufferOffsetAlignment). Default 0. */
  cacheByteOffset?: number;
  /** [rows, heads, kvLoraRank] f32 output. */
  oLat: GPUBuffer;
  label?: string;
}

export interface PreparedMlaPrefill {
  /** For the current startPos. */
  readonly bytes: number;
  readonly flops: number;
  /** Rewrites the params for the next chunk of the same size (the dispatch does not depend on it). */
  setStartPos(startPos: number): void;
  /** Record the dispatch into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Free the params buffer. */
  destroy(): void;
}

/** Validates the arguments, writes the params and builds the bind group once. */
export function prepareMlaPrefill(device: GPUDevice, pipeline: MlaPrefillPipeline, args: MlaPrefillArgs): PreparedMlaPrefill {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
  const label = args.label ?? 'mla_prefill';
  const shape = { rows, heads, kvLoraRank: rkv, ropeDim: dr };
  checkMlaArgs(device, label, args);
  if (rkv !== pipeline.kvLoraRank) throw new RangeError(`${label}: kvLoraRank ${rkv}, but the pipeline was built for ${pipeline.kvLoraRank}`);
  checkStartPos(label, args.startPos, rows, maxT);

  const paramsBuffer = device.createBuffer({ label: `${label}.params`, size: PARAMS_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const bindGroup = device.createBindGroup({
    label,
    layout: pipeline.kernel.bindGroupLayout,
    entries: [
      { binding: 0, resource: { buffer: paramsBuffer } },
      { binding: 1, resource: { buffer: args.qLat, size: 4 * rows * heads * rkv } },
      // dr = 0 would be an empty binding: bind one vec4 that is never read.
      { binding: 2, resource: { buffer: args.qPe, size: 4 * Math.max(4, rows * heads * dr) } },
      { binding: 3, resource: { buffer: args.cache, offset: args.cacheByteOffset ?? 0, size: 4 * maxT * (rkv + dr) } },
      { binding: 4, resource: { buffer: args.oLat, size: 4 * rows * heads * rkv } },
    ],
  });

  const workgroups = pipeline.variant.isSoftware ? Math.ceil((rows * heads) / pipeline.workgroupSize) : Math.ceil(rows / MLA_PREFILL_BQ) * heads;
  const [gx, gy] = workgroupGrid(workgroups, device.limits.maxComputeWorkgroupsPerDimension);
  let cost = { bytes: 0, flops: 0 };

  function setStartPos(next: number): void {
    checkStartPos(label, next, rows, maxT);
    cost = mlaPrefillCost({ ...shape, startPos: next });
    const params = new ArrayBuffer(PARAMS_BYTES);
    new Uint32Array(params, 0, 5).set([rows, heads, rkv, dr, next]);
    new Float32Array(params, 20, 1)[0] = args.softmaxScale;
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
      pass.setPipeline(pipeline.kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
    destroy() {
      paramsBuffer.destroy();
    },
  };
}
