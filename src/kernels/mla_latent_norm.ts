// The latent norms and cache write of one MLA layer in one dispatch: q_a_layernorm into q_a_norm,
// and the cache rows [kv_a_layernorm(c_kv) | RoPE(k_pe)] of the step written straight from the
// kv_a_proj_with_mqa output (no copy). Shader: shaders/mla_latent_norm.wgsl (+ rope_rotate.wgsl);
// reference: mla_latent_norm.ref.ts. The model calls it through src/model/kv_cache.ts
// (prepareCacheWrite), which knows the cache's layout.

import shaderSource from '../../shaders/mla_latent_norm.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type BufferResource, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { RMSNORM_REDUCES, resolveNormReduce, type NormReduceOptions, type RmsNormReduce } from './norm_reduce.ts';
import { ROPE_ROTATE_SNIPPET } from './rope_yarn.ts';

/** q_a_layernorm: q_lora_rank configs (q_a_proj's output normed here too); none: q_proj configs. */
export const MLA_LATENT_NORM_Q = ['q_a_layernorm', 'none'] as const;
export type MlaLatentNormQ = (typeof MLA_LATENT_NORM_Q)[number];

export const MLA_LATENT_NORM_AXES = { q_norm: MLA_LATENT_NORM_Q, reduce: RMSNORM_REDUCES };

/**
 * Prepended to the shader in this order. `enable subgroups;` (the subgroup variant only) must come
 * before every declaration, so before rope_rotate.wgsl's, and cannot live in mla_latent_norm.wgsl.
 */
export const MLA_LATENT_NORM_SNIPPETS = [
  { name: 'enable_subgroups', code: '#if reduce == subgroup\nenable subgroups;\n#endif' },
  ROPE_ROTATE_SNIPPET,
] as const;

/** `reduce`: how both norms reduce a row (norm_reduce.ts; the engine passes the RMSNorm's measured choice). */
export interface MlaLatentNormOptions extends NormReduceOptions {
  /** Default q_a_layernorm. */
  qNorm?: MlaLatentNormQ;
}


export interface MlaLatentNormShape {
  rows: number;
  /** kv_lora_rank. */
  kvLoraRank: number;
  /** qk_rope_head_dim (even). */
  ropeDim: number;
  /** q_lora_rank; 0 without the q norm. */
  qWidth: number;
}

/**
 * Bytes and FLOPs for the benchmark: q_a read and q_a_norm written, kv_a read and the cache rows
 * written, the norm weights, positions and table read once; 4 FLOPs per normed value (rmsnorm's
 * count) and 34 per rope pair (rope_yarn's).
 */
export function mlaLatentNormCost({ rows, kvLoraRank, ropeDim, qWidth }: MlaLatentNormShape): Cost {
  const width = kvLoraRank + ropeDim;
  return {
    bytes: 4 * (2 * rows * qWidth + qWidth + 2 * rows * width + kvLoraRank + rows) + 2 * ropeDim,
    flops: 4 * rows * (qWidth + kvLoraRank) + 17 * rows * ropeDim,
  };
}

export interface MlaLatentNormArgs {
  rows: number;
  kvLoraRank: number;
  ropeDim: number;
  /** rms_norm_eps of the config (both norms). */
  eps: number;
  /** [rows, kvLoraRank + ropeDim] f32: x · kv_a_proj_with_mqaᵀ, read only. */
  kvA: GPUBuffer;
  /** [kvLoraRank] f32 kv_a_layernorm weight. */
  kvNormWeight: GPUBuffer;
  /** [rows] u32 absolute positions of the rows. */
  positions: GPUBuffer;
  /** [ropeDim / 2] f32 YaRN inverse frequencies (kernels/rope_tables.ts). */
  invFreq: GPUBuffer;
  /** One layer of the latent cache, [cacheRows, kvLoraRank + ropeDim] f32 (a binding of its buffer). */
  cache: BufferResource;
  /** Positions the cache binding holds. */
  cacheRows: number;
  /** The cache row the step's row 0 goes to; moved per step with setStartPos. */
  startPos: number;
  /** q_norm q_a_layernorm only: q_a [rows, width] normed into qANorm [rows, width] with weight [width]. */
  q?: { width: number; qA: GPUBuffer; weight: GPUBuffer; qANorm: GPUBuffer };
  label?: string;
}

export interface PreparedMlaLatentNorm extends PreparedCall {
  /** Moves the cache rows written to startPos .. startPos + rows - 1 (one small params write). */
  setStartPos(startPos: number): void;
}

export interface MlaLatentNorm extends Kernel<MlaLatentNormArgs, PreparedMlaLatentNorm> {
  readonly reduce: RmsNormReduce;
  /** Invocations per workgroup: rows per workgroup for `thread`, invocations per row otherwise. */
  readonly workgroupSize: number;
}


export function createMlaLatentNorm(ctx: KernelContext, options: MlaLatentNormOptions = {}): MlaLatentNorm {
  const { device } = ctx.gpu;
  const qNorm = options.qNorm ?? 'q_a_layernorm';
  const { reduce, workgroupSize } = resolveNormReduce(ctx, 'mla_latent_norm', options);
  const rowPerThread = reduce === 'thread';
  const withQ = qNorm === 'q_a_layernorm';
  const storage = 'read-only-storage' as const;
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'mla_latent_norm',
    source: shaderSource,
    snippets: MLA_LATENT_NORM_SNIPPETS,
    axes: MLA_LATENT_NORM_AXES,
    variant: { q_norm: qNorm, reduce },
    constants: { WG: workgroupSize },
    bindings: ['uniform', storage, storage, storage, storage, 'storage', ...(withQ ? [storage, storage, 'storage' as const] : [])],
  });

  return {
    name: 'mla_latent_norm',
    reduce,
    workgroupSize,
    prepare(args) {
      const { rows, kvLoraRank, ropeDim, cacheRows, q } = args;
      const label = args.label ?? 'mla_latent_norm';
      checkCounts(label, { kvLoraRank, cacheRows });
      checkCounts(label, { rows }, 0);
      if (!(ropeDim > 0) || ropeDim % 2 !== 0) throw new ArgumentError(`${label}: ropeDim must be positive and even, got ${ropeDim}`);
      if (withQ !== (q !== undefined)) throw new ArgumentError(`${label}: q (q_a and q_a_layernorm) is given exactly to the q_a_layernorm variant`);
      if (q) checkCounts(label, { qWidth: q.width });
      const width = kvLoraRank + ropeDim;
      const qWidth = q?.width ?? 0;
      const checkStart = (startPos: number) => {
        if (!(Number.isInteger(startPos) && startPos >= 0 && startPos + rows <= cacheRows)) {
          throw new ArgumentError(`${label}: cache rows ${startPos}..${startPos + rows - 1} do not fit its ${cacheRows} positions`);
        }
      };
      checkStart(args.startPos);
      checkBindings(device, label, {
        kvA: [args.kvA, 4 * rows * width],
        kvNormWeight: [args.kvNormWeight, 4 * kvLoraRank],
        positions: [args.positions, 4 * rows],
        invFreq: [args.invFreq, 2 * ropeDim],
        cache: [args.cache, 4 * cacheRows * width],
        ...(q ? { qA: [q.qA, 4 * rows * qWidth] as const, qNormWeight: [q.weight, 4 * qWidth] as const, qANorm: [q.qANorm, 4 * rows * qWidth] as const } : {}),
      });

      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'f32']);
      uniforms.write([rows, qWidth, kvLoraRank, ropeDim / 2, args.startPos * width, args.eps]);
      const call = singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [args.kvA, args.kvNormWeight, args.positions, args.invFreq, args.cache, q?.qA, q?.weight, q?.qANorm],
        workgroups: rowPerThread ? Math.ceil(rows / workgroupSize) : rows,
        cost: mlaLatentNormCost({ rows, kvLoraRank, ropeDim, qWidth }),
      });
      return {
        ...call,
        setStartPos(startPos) {
          checkStart(startPos);
          uniforms.set(4, startPos * width);
        },
      };
    },
  };
}
