// MLA decode attention over the latent cache, absorbed form, through W_UV (src/model/MATH.md 4.4):
// o[r, h] = W_UV[h] @ softmax(...) c_hat. Pipelines, bind groups, params, the dispatches, bytes/FLOPs.
// While one split of MLA_DECODE_CHUNK positions covers the context, one dispatch does it all
// (shaders/mla_decode.wgsl); with more splits, pass 1 writes per-split partials, the merge
// (shaders/mla_decode_reduce.wgsl) writes o_lat and expand_o (mla_absorb.ts) multiplies it by W_UV.
// Reference: mla_decode.ref.ts (o_lat), then expandORef of mla_absorb.ref.ts. q_lat = q_nope @ W_UK
// is done before, by absorb_q.
// Query row r sits at position startPos + r and attends causally to 0 .. startPos + r, so the same
// kernel serves the decode step (1 row), the MTP verify step (2 rows) and a prefill chunk (T rows,
// attending to the cached prefix and to itself). For long prefill chunks mla_prefill shares each
// key tile across 16 query rows and reads the cache fewer times.
// Three reductions of an item (split, row, head): thread, workgroup and subgroup (MlaDecodeReduce);
// the engine measures which at load (chooseMlaDecodeReduce, variant_choice.ts).

import partialSource from '../../shaders/mla_decode.wgsl?raw';
import reduceSource from '../../shaders/mla_decode_reduce.wgsl?raw';
import subgroupsSource from '../../shaders/mla_decode_subgroups.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { BLOCK, checkBindings, checkCounts, createBindGroup, dispatch, kernelPipeline, Uniforms, type Cost, type Encodable, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { createMlaExpandO, KV_B_SNIPPETS, kvBBytes, mlaAbsorbCost, type KvBBuffers } from './mla_absorb.ts';
import { checkMlaArgs, checkStartPos, mlaCacheBindings, type MlaAttentionArgs } from './mla_args.ts';
import type { MlaDecodeShape } from './mla_decode.ref.ts';
import { WEIGHT_FORMATS, type WeightFormat } from './matmul_operands.ts';
import { subgroupMinSize } from './norm_reduce.ts';

export type { MlaDecodeShape } from './mla_decode.ref.ts';

/**
 * How an item (split, row, head) is reduced (shaders/mla_decode.wgsl):
 *   thread     one invocation per item, no barrier (CPU adapters, where a barrier is very expensive)
 *   workgroup  one workgroup per item, scores in workgroup memory (GPUs)
 *   subgroup   one workgroup per item, each score's dot product and the softmax max and sum by
 *              subgroups (subgroupAdd / subgroupMax), then one workgroup step; needs 'subgroups'
 */
export const MLA_DECODE_REDUCES = ['thread', 'workgroup', 'subgroup'] as const;
export type MlaDecodeReduce = (typeof MLA_DECODE_REDUCES)[number];

export interface MlaDecodeOptions {
  /** How kv_b_proj.weight is stored (W_UV is read from it); default fp8 (the release). */
  weights?: WeightFormat;
  /** Default `thread` on software adapters (isSoftware), else `workgroup`; chooseMlaDecodeReduce measures it. */
  reduce?: MlaDecodeReduce;
  /** The older switch: true is reduce `thread`, false `workgroup`. `reduce` wins when both are given. */
  itemPerThread?: boolean;
  /**
   * `subgroup` only: invocations per item, any count the adapter allows in a workgroup. Default:
   * the adapter's smallest subgroup size on software adapters (one subgroup per item: 4 lanes on
   * SwiftShader; 4 where the size is not reported), else 64.
   */
  subgroupWorkgroupSize?: number;
}

/** Cache positions per split (flash-decoding); at most MAX_CHUNK of the shader. */
export const MLA_DECODE_CHUNK = 256;
const WG_PER_ITEM = 64; // GPUs: invocations sharing one (split, row, head)
const WG_ITEMS = 16; // CPU adapters: (split, row, head) items per workgroup (small: a CPU adapter runs a workgroup on one core)
const WG_REDUCE = 64;
const WG_SOFTWARE_SUBGROUP = 4; // CPU adapters that do not report their subgroup size: SwiftShader's

/** The reduction and pass 1's workgroup size (typed errors for bad options or a missing feature). */
function resolveReduce(ctx: KernelContext, options: MlaDecodeOptions): { reduce: MlaDecodeReduce; workgroupSize: number } {
  const { device } = ctx.gpu;
  const software = ctx.gpu.adapter.isSoftware;
  const reduce: MlaDecodeReduce = options.reduce ?? ((options.itemPerThread ?? software) ? 'thread' : 'workgroup');
  if (!MLA_DECODE_REDUCES.includes(reduce)) throw new ArgumentError(`mla_decode: "${String(reduce)}" is not a reduction; use one of ${MLA_DECODE_REDUCES.join(', ')}`);
  if (reduce !== 'subgroup') {
    if (options.subgroupWorkgroupSize !== undefined) throw new ArgumentError('mla_decode: subgroupWorkgroupSize is for the subgroup reduction only');
    return { reduce, workgroupSize: reduce === 'thread' ? WG_ITEMS : WG_PER_ITEM };
  }
  if (!device.features.has('subgroups')) throw new GpuLimitError("mla_decode: the subgroup reduction needs the 'subgroups' feature, which this device lacks");
  const workgroupSize = options.subgroupWorkgroupSize ?? (software ? (subgroupMinSize(device) ?? WG_SOFTWARE_SUBGROUP) : WG_PER_ITEM);
  const max = Math.min(device.limits.maxComputeWorkgroupSizeX, device.limits.maxComputeInvocationsPerWorkgroup);
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1 || workgroupSize > max) {
    throw new ArgumentError(`mla_decode: subgroupWorkgroupSize must be an integer in 1 .. ${max}, got ${workgroupSize}`);
  }
  return { reduce, workgroupSize };
}

export interface MlaDecodeCostShape extends MlaDecodeShape {
  startPos: number;
}

/**
 * Bytes and FLOPs of the attention up to o_lat, for the benchmark. Bytes: the cache rows
 * 0 .. startPos + rows - 1 read once (on a GPU the heads re-read them from L2), q_lat and q_pe read,
 * o_lat written, and with more than one split the partials written and read back. FLOPs per (row,
 * head, attended position): 2 (rkv + dr) for the score, 2 rkv for the weighted sum; plus 2 per
 * partial value in the reduction. The call adds W_UV's (mlaAbsorbCost of expand_o).
 */
export function mlaDecodeCost({ rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos }: MlaDecodeCostShape, chunk = MLA_DECODE_CHUNK): Cost {
  const positions = startPos + rows;
  const splits = Math.ceil(positions / chunk);
  let attended = 0;
  for (let r = 0; r < rows; r++) attended += startPos + r + 1;
  const partials = splits > 1 ? rows * heads * splits * (rkv + 2) : 0; // one split: no pass 2
  return {
    bytes: 4 * (positions * (rkv + dr) + rows * heads * (rkv + dr) + 2 * partials + rows * heads * rkv),
    flops: heads * attended * (2 * (rkv + dr) + 2 * rkv) + 2 * partials,
  };
}

/** The attention arguments of mla_args.ts (shared with mla_prefill), then W_UV's. */
export interface MlaDecodeArgs extends MlaAttentionArgs, KvBBuffers {
  /** qk_nope_head_dim (dn): W_UV[h] starts at row h * (dn + dv) + dn of kv_b_proj. */
  qkNopeHeadDim: number;
  /** v_head_dim (dv). */
  vHeadDim: number;
  /** [rows, heads * dv] f32, written: o[r, h, v] = sum_c o_lat[r, h, c] * W_UV[h][v, c]. oLat is written only past one split. */
  o: GPUBuffer;
}

export interface PreparedMlaDecode extends PreparedCall {
  /** Rewrites the params for a new step; encode after it (the split count, and with it the passes that run, is fixed at encode). */
  setStartPos(startPos: number): void;
}

export interface MlaDecode extends Kernel<MlaDecodeArgs, PreparedMlaDecode> {
  readonly weights: WeightFormat;
  readonly reduce: MlaDecodeReduce;
  /** Pass 1's invocations per workgroup: items per workgroup for `thread`, invocations per item otherwise. */
  readonly workgroupSize: number;
}

export function createMlaDecode(ctx: KernelContext, options: MlaDecodeOptions = {}): MlaDecode {
  const { device } = ctx.gpu;
  const weights = options.weights ?? 'fp8';
  if (!WEIGHT_FORMATS.includes(weights)) throw new ArgumentError(`mla_decode: weights "${weights}" is not one of ${WEIGHT_FORMATS.join(', ')}`);
  const { reduce: reduction, workgroupSize } = resolveReduce(ctx, options);
  const itemPerThread = reduction === 'thread';
  const subgroups = reduction === 'subgroup';
  const partial = kernelPipeline(ctx.pipelines, {
    kernel: 'mla_decode',
    source: partialSource,
    // mla_decode_subgroups.wgsl leads: the subgroup variant's directives precede kv_b_proj's declarations.
    snippets: [{ name: 'mla_decode_subgroups.wgsl', code: subgroupsSource }, ...KV_B_SNIPPETS],
    axes: { weights: WEIGHT_FORMATS, reduce: MLA_DECODE_REDUCES },
    variant: { weights, reduce: reduction },
    entryPoint: 'mla_decode',
    constants: { WG: workgroupSize, ONE_PER_INVOCATION: itemPerThread ? 1 : 0, CHUNK: MLA_DECODE_CHUNK },
    // params, q_lat, q_pe, cache, part_o, part_ml, kv_b, o, [scales]
    bindings: [
      'uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'storage', 'read-only-storage', 'storage',
      weights === 'fp8' ? 'read-only-storage' : undefined,
    ],
  });
  // The merge: thread and workgroup share one pipeline (one invocation per element); subgroup one workgroup per (row, head).
  const mergeReduce = subgroups ? 'subgroup' : 'thread';
  const mergeWorkgroupSize = subgroups ? workgroupSize : WG_REDUCE;
  const reduce = kernelPipeline(ctx.pipelines, {
    kernel: 'mla_decode_reduce',
    source: reduceSource,
    entryPoint: 'mla_decode_reduce',
    axes: { reduce: MLA_DECODE_REDUCES },
    variant: { reduce: mergeReduce },
    constants: { WG: mergeWorkgroupSize },
    // params, part_o, part_ml, o_lat
    bindings: ['uniform', 'read-only-storage', 'read-only-storage', 'storage'],
  });
  const expandO = createMlaExpandO(ctx, { weights });

  return {
    name: 'mla_decode',
    weights,
    reduce: reduction,
    workgroupSize,
    prepare(args) {
      const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT, qkNopeHeadDim: dn, vHeadDim: dv } = args;
      const label = args.label ?? 'mla_decode';
      const shape = { rows, heads, kvLoraRank: rkv, ropeDim: dr };
      checkMlaArgs(device, label, args);
      checkStartPos(label, args.startPos, rows, maxT);
      checkCounts(label, { qkNopeHeadDim: dn, vHeadDim: dv });
      if (weights === 'fp8' && !args.kvBScale) throw new ArgumentError(`${label}: kvBScale (kv_b_proj.weight_scale_inv) is required for fp8 weights`);
      if (weights !== 'fp8' && args.kvBScale) throw new ArgumentError(`${label}: kvBScale is not used by ${weights} weights`);
      const kv = kvBBytes({ heads, qkNopeHeadDim: dn, vHeadDim: dv, kvLoraRank: rkv }, weights);
      checkBindings(device, label, {
        kvB: [args.kvB, kv.weight],
        ...(args.kvBScale ? { kvBScale: [args.kvBScale, kv.scale] as const } : {}),
        o: [args.o, 4 * rows * heads * dv],
      });
      const io = mlaCacheBindings(args);
      for (const [name, buffer] of [['qLat', args.qLat], ['qPe', args.qPe], ['cache', args.cache], ['oLat', args.oLat], ['kvB', args.kvB]] as const) {
        if (buffer === args.o) throw new ArgumentError(`${label}: o must not share a buffer with ${name}`);
      }

      // The partials of every split a step of maxT positions can have, allocated once; with one split
      // part_o holds o_lat.
      const maxSplits = Math.ceil(maxT / MLA_DECODE_CHUNK);
      const partO = device.createBuffer({ label: `${label}.part_o`, size: 4 * rows * heads * maxSplits * rkv, usage: GPUBufferUsage.STORAGE });
      const partMl = device.createBuffer({ label: `${label}.part_ml`, size: 8 * rows * heads * maxSplits, usage: GPUBufferUsage.STORAGE });
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'f32', 'u32', 'u32', 'u32']);
      const partialGroup = createBindGroup(device, label, partial, [uniforms.buffer, io.qLat, io.qPe, io.cache, partO, partMl, args.kvB, args.o, args.kvBScale]);
      const reduceGroup = createBindGroup(device, `${label}.reduce`, reduce, [uniforms.buffer, partO, partMl, io.oLat]);
      const reduceStep = dispatch(device, reduce, reduceGroup, subgroups ? rows * heads : Math.ceil((rows * heads * rkv) / WG_REDUCE));
      // Past one split: o = W_UV o_lat by the kernel the prefill plans use.
      const expandStep = expandO.prepare({
        rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv, kvB: args.kvB, kvBScale: args.kvBScale, oLat: args.oLat, o: args.o, label: `${label}.expand_o`,
      });
      const expandCost = mlaAbsorbCost({ rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv, step: 'expand_o', weights });
      let partialStep: Encodable;
      let splits = 1;
      let cost: Cost = { bytes: 0, flops: 0 };

      function setStartPos(startPos: number): void {
        checkStartPos(label, startPos, rows, maxT);
        splits = Math.ceil((startPos + rows) / MLA_DECODE_CHUNK);
        const items = splits * rows * heads;
        partialStep = dispatch(device, partial, partialGroup, itemPerThread ? Math.ceil(items / workgroupSize) : items);
        const attention = mlaDecodeCost({ ...shape, startPos });
        cost = { bytes: attention.bytes + expandCost.bytes, flops: attention.flops + expandCost.flops };
        uniforms.write([rows, heads, rkv, dr, startPos, splits, args.softmaxScale, Math.ceil(rkv / BLOCK), dn, dv]);
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
          partialStep.encode(pass);
          if (splits > 1) {
            // one split: pass 1 wrote o itself
            reduceStep.encode(pass);
            expandStep.encode(pass);
          }
        },
        destroy() {
          for (const b of [uniforms, partO, partMl, expandStep]) b.destroy();
        },
      };
    },
  };
}
