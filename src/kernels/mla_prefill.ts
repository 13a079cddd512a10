// MLA prefill attention over the latent cache, absorbed form (src/model/MATH.md 4.4): pipeline,
// bind group, params, the one dispatch, bytes/FLOPs. Shader: shaders/mla_prefill.wgsl; reference:
// mla_prefill.ref.ts. A chunk of T query rows at startPos .. startPos + T - 1 (cache rows already
// written) attends to the cached prefix and to itself; row s sees 0 .. startPos + s. mla_decode
// computes the same thing with one workgroup per (row, head); this kernel shares each key tile
// across BQ query rows (flash attention), so long chunks read the cache T / BQ times fewer.
// q_lat = q_nope @ W_UK and o = W_UV @ o_lat are matmuls done elsewhere.

import shaderSource from '../../shaders/mla_prefill.wgsl?raw';
import { ArgumentError, UnsupportedConfigError } from '../errors.ts';
import { createBindGroup, dispatch, kernelPipeline, Uniforms, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { checkMlaArgs, checkStartPos, mlaCacheBindings, type MlaAttentionArgs } from './mla_args.ts';
import type { MlaPrefillShape } from './mla_prefill.ref.ts';

export type { MlaPrefillShape } from './mla_prefill.ref.ts';

export interface MlaPrefillOptions {
  /** kv_lora_rank: the GPU variant's workgroup covers its columns. */
  kvLoraRank: number;
  /** One invocation per (row, head), no barrier (CPU adapters). Default: the adapter's isSoftware. */
  itemPerThread?: boolean;
}

/** Query rows per workgroup of the GPU variant (BQ of the shader). */
export const MLA_PREFILL_BQ = 16;
const MAX_COLS = 2; // latent vec4 columns per invocation of the GPU variant (MAX_COLS of the shader)
const WG_MIN = 64;
const WG_ITEMS = 16; // CPU adapters: (row, head) items per workgroup, as mla_decode

export interface MlaPrefillCostShape extends MlaPrefillShape {
  startPos: number;
}

/**
 * Bytes and FLOPs for the benchmark. Bytes: the cache rows 0 .. startPos + rows - 1 read once per
 * query tile of BQ rows (on a GPU the heads of a tile re-read them from L2), q_lat and q_pe read,
 * o_lat written. FLOPs per (row, head, attended position): 2 (rkv + dr) for the score, 2 rkv for the
 * weighted sum.
 */
export function mlaPrefillCost({ rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos }: MlaPrefillCostShape): Cost {
  let cacheRows = 0;
  for (let r0 = 0; r0 < rows; r0 += MLA_PREFILL_BQ) cacheRows += startPos + Math.min(r0 + MLA_PREFILL_BQ, rows);
  let attended = 0;
  for (let r = 0; r < rows; r++) attended += startPos + r + 1;
  return {
    bytes: 4 * (cacheRows * (rkv + dr) + rows * heads * (rkv + dr) + rows * heads * rkv),
    flops: heads * attended * (2 * (rkv + dr) + 2 * rkv),
  };
}

/** The same arguments as the other MLA kernel's (mla_args.ts): the model passes one set to either. */
export type MlaPrefillArgs = MlaAttentionArgs;

export interface PreparedMlaPrefill extends PreparedCall {
  /** Rewrites the params for the next chunk of the same size (the dispatch does not depend on it). */
  setStartPos(startPos: number): void;
}

/**
 * The GPU variant's workgroup holds the whole o_lat tile in registers, MAX_COLS vec4 columns per
 * invocation, so its size follows kv_lora_rank (64 for V3's 512 and below).
 */
export interface MlaPrefill extends Kernel<MlaPrefillArgs, PreparedMlaPrefill> {
  /** Invocations per workgroup (the GPU variant's follows kv_lora_rank). */
  readonly workgroupSize: number;
}

export function createMlaPrefill(ctx: KernelContext, options: MlaPrefillOptions): MlaPrefill {
  const { device } = ctx.gpu;
  const { kvLoraRank } = options;
  const itemPerThread = options.itemPerThread ?? ctx.gpu.adapter.isSoftware;
  if (!(Number.isInteger(kvLoraRank) && kvLoraRank > 0 && kvLoraRank % 4 === 0)) {
    throw new UnsupportedConfigError('kv_lora_rank', `mla_prefill: kv_lora_rank ${kvLoraRank} must be a positive multiple of 4`);
  }
  const columnsWg = Math.ceil(Math.ceil(kvLoraRank / 4 / MAX_COLS) / 32) * 32;
  const workgroupSize = itemPerThread ? WG_ITEMS : Math.max(WG_MIN, columnsWg);
  const maxWg = device.limits.maxComputeInvocationsPerWorkgroup;
  if (workgroupSize > maxWg) {
    throw new UnsupportedConfigError('kv_lora_rank', `mla_prefill: kv_lora_rank ${kvLoraRank} needs ${workgroupSize} invocations per workgroup, the device allows ${maxWg}`);
  }
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'mla_prefill',
    source: shaderSource,
    entryPoint: 'mla_prefill',
    constants: { WG: workgroupSize, ONE_PER_INVOCATION: itemPerThread ? 1 : 0 },
    // params, q_lat, q_pe, cache, o_lat
    bindings: ['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage'],
  });

  return {
    name: 'mla_prefill',
    workgroupSize,
    prepare(args) {
      const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
      const label = args.label ?? 'mla_prefill';
      const shape = { rows, heads, kvLoraRank: rkv, ropeDim: dr };
      checkMlaArgs(device, label, args);
      if (rkv !== kvLoraRank) throw new ArgumentError(`${label}: kvLoraRank ${rkv}, but the kernel was made for ${kvLoraRank}`);
      checkStartPos(label, args.startPos, rows, maxT);

      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'f32']);
      const io = mlaCacheBindings(args);
      const bindGroup = createBindGroup(device, label, pipeline, [uniforms.buffer, io.qLat, io.qPe, io.cache, io.oLat]);
      const step = dispatch(device, pipeline, bindGroup, itemPerThread ? Math.ceil((rows * heads) / workgroupSize) : Math.ceil(rows / MLA_PREFILL_BQ) * heads);
      let cost: Cost = { bytes: 0, flops: 0 };

      function setStartPos(next: number): void {
        checkStartPos(label, next, rows, maxT);
        cost = mlaPrefillCost({ ...shape, startPos: next });
        uniforms.write([rows, heads, rkv, dr, next, args.softmaxScale]);
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
        encode: (pass) => step.encode(pass),
        destroy: () => uniforms.destroy(),
      };
    },
  };
}
