// MLA decode attention over the latent cache, absorbed form (src/model/MATH.md 4.4): pipelines,
// bind groups, params, the two dispatches (per-split partials, then their reduction), bytes/FLOPs.
// Shaders: shaders/mla_decode.wgsl (pass 1), shaders/mla_decode_reduce.wgsl (pass 2);
// reference: mla_decode.ref.ts. q_lat = q_nope @ W_UK and o = W_UV @ o_lat are matmuls done elsewhere.
// Query row r sits at position startPos + r and attends causally to 0 .. startPos + r, so the same
// kernel serves the decode step (1 row), the MTP verify step (2 rows) and a prefill chunk (T rows,
// attending to the cached prefix and to itself). For long prefill chunks mla_prefill shares each
// key tile across 16 query rows and reads the cache fewer times.

import partialSource from '../../shaders/mla_decode.wgsl?raw';
import reduceSource from '../../shaders/mla_decode_reduce.wgsl?raw';
import { createBindGroup, dispatch, kernelPipeline, Uniforms, type Cost, type Encodable, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { checkMlaArgs, checkStartPos, mlaCacheBindings, type MlaAttentionArgs } from './mla_args.ts';
import type { MlaDecodeShape } from './mla_decode.ref.ts';

export type { MlaDecodeShape } from './mla_decode.ref.ts';

export interface MlaDecodeOptions {
  /** One invocation per (split, row, head), no barrier (CPU adapters). Default: the adapter's isSoftware. */
  itemPerThread?: boolean;
}

/** Cache positions per split (flash-decoding); at most MAX_CHUNK of the shader. */
export const MLA_DECODE_CHUNK = 256;
const WG_PER_ITEM = 64; // GPUs: invocations sharing one (split, row, head)
const WG_ITEMS = 16; // CPU adapters: (split, row, head) items per workgroup (small: a CPU adapter runs a workgroup on one core)
const WG_REDUCE = 64;

export interface MlaDecodeCostShape extends MlaDecodeShape {
  startPos: number;
}

/**
 * Bytes and FLOPs for the benchmark. Bytes: the cache rows 0 .. startPos + rows - 1 read once (on a
 * GPU the heads re-read them from L2), q_lat and q_pe read, the partials written and read back, o_lat
 * written. FLOPs per (row, head, attended position): 2 (rkv + dr) for the score, 2 rkv for the
 * weighted sum; plus 2 per partial value in the reduction.
 */
export function mlaDecodeCost({ rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos }: MlaDecodeCostShape, chunk = MLA_DECODE_CHUNK): Cost {
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

/** The same arguments as the other MLA kernel's (mla_args.ts): the model passes one set to either. */
export type MlaDecodeArgs = MlaAttentionArgs;

export interface PreparedMlaDecode extends PreparedCall {
  /** Rewrites the params for a new step; encode after it (the split count is fixed at encode). */
  setStartPos(startPos: number): void;
}

export function createMlaDecode(ctx: KernelContext, options: MlaDecodeOptions = {}): Kernel<MlaDecodeArgs, PreparedMlaDecode> {
  const { device } = ctx.gpu;
  const itemPerThread = options.itemPerThread ?? ctx.gpu.adapter.isSoftware;
  const workgroupSize = itemPerThread ? WG_ITEMS : WG_PER_ITEM;
  const partial = kernelPipeline(ctx.pipelines, {
    kernel: 'mla_decode',
    source: partialSource,
    entryPoint: 'mla_decode',
    constants: { WG: workgroupSize, ONE_PER_INVOCATION: itemPerThread ? 1 : 0, CHUNK: MLA_DECODE_CHUNK },
    // params, q_lat, q_pe, cache, part_o, part_ml
    bindings: ['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'storage'],
  });
  const reduce = kernelPipeline(ctx.pipelines, {
    kernel: 'mla_decode_reduce',
    source: reduceSource,
    entryPoint: 'mla_decode_reduce',
    constants: { WG: WG_REDUCE },
    // params, part_o, part_ml, o_lat
    bindings: ['uniform', 'read-only-storage', 'read-only-storage', 'storage'],
  });

  return {
    name: 'mla_decode',
    prepare(args) {
      const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
      const label = args.label ?? 'mla_decode';
      const shape = { rows, heads, kvLoraRank: rkv, ropeDim: dr };
      checkMlaArgs(device, label, args);
      checkStartPos(label, args.startPos, rows, maxT);

      // The partials of every split a step of maxT positions can have, allocated once.
      const maxSplits = Math.ceil(maxT / MLA_DECODE_CHUNK);
      const partO = device.createBuffer({ label: `${label}.part_o`, size: 4 * rows * heads * maxSplits * rkv, usage: GPUBufferUsage.STORAGE });
      const partMl = device.createBuffer({ label: `${label}.part_ml`, size: 8 * rows * heads * maxSplits, usage: GPUBufferUsage.STORAGE });
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'f32']);
      const io = mlaCacheBindings(args);
      const partialGroup = createBindGroup(device, label, partial, [uniforms.buffer, io.qLat, io.qPe, io.cache, partO, partMl]);
      const reduceGroup = createBindGroup(device, `${label}.reduce`, reduce, [uniforms.buffer, partO, partMl, io.oLat]);
      const reduceStep = dispatch(device, reduce, reduceGroup, Math.ceil((rows * heads * rkv) / WG_REDUCE));
      let partialStep: Encodable;
      let cost: Cost = { bytes: 0, flops: 0 };

      function setStartPos(startPos: number): void {
        checkStartPos(label, startPos, rows, maxT);
        const splits = Math.ceil((startPos + rows) / MLA_DECODE_CHUNK);
        const items = splits * rows * heads;
        partialStep = dispatch(device, partial, partialGroup, itemPerThread ? Math.ceil(items / workgroupSize) : items);
        cost = mlaDecodeCost({ ...shape, startPos });
        uniforms.write([rows, heads, rkv, dr, startPos, splits, args.softmaxScale]);
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
          reduceStep.encode(pass);
        },
        destroy() {
          for (const b of [uniforms, partO, partMl]) b.destroy();
        },
      };
    },
  };
}
