// The per-head products of absorbed MLA with kv_b_proj (src/model/MATH.md 4.4): before attention
// over the latent cache, q_lat = q_nope @ W_UK[h] (and q_pe copied out beside it, RoPE applied);
// after it, o = W_UV[h] @ o_lat (after mla_prefill, or after mla_decode's merge; with one split
// mla_decode applies W_UV itself). kv_b_proj stays as the checkpoint stores it, one
// [heads * (dn + dv), rkv] matrix with its 128 x 128 block scales; the kernel finds W_UK[h] and
// W_UV[h] inside it (shaders/kv_b_proj.wgsl, shared with mla_decode).
// Shader: shaders/mla_absorb.wgsl (RoPE from shaders/rope_rotate.wgsl); reference: mla_absorb.ref.ts.

import absorbSource from '../../shaders/mla_absorb.wgsl?raw';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import kvBSource from '../../shaders/kv_b_proj.wgsl?raw';
import { ROPE_ROTATE_SNIPPET } from './rope_yarn.ts';
import { ArgumentError } from '../errors.ts';
import { BLOCK, checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type BindingNeeds, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { CachedPipeline } from '../gpu/pipeline_cache.ts';
import { WEIGHT_FORMATS, type WeightFormat } from './matmul_operands.ts';

/** absorb_q: q_nope @ W_UK and the rotated q_pe copy; expand_o: o_lat @ W_UV^T. */
export const MLA_ABSORB_STEPS = ['absorb_q', 'expand_o'] as const;
export type MlaAbsorbStep = (typeof MLA_ABSORB_STEPS)[number];

export interface MlaAbsorbShape {
  /** Query rows (tokens) of the call. */
  rows: number;
  /** num_attention_heads. */
  heads: number;
  /** dn. */
  qkNopeHeadDim: number;
  /** dr, even (64 in V3): RoPE rotates pairs. */
  qkRopeHeadDim: number;
  /** dv. */
  vHeadDim: number;
  /** rkv. */
  kvLoraRank: number;
}

export interface MlaAbsorbOptions {
  /** How kv_b_proj.weight is stored; default fp8 (the release). */
  weights?: WeightFormat;
  /** Invocations per workgroup, default 64. A tuning number. */
  workgroupSize?: number;
}

/** kv_b_proj of one layer, as in the checkpoint. */
export interface KvBBuffers {
  /** kv_b_proj.weight [heads * (dn + dv), rkv]: e4m3 bytes, bf16 or f32 by `weights`. */
  kvB: GPUBuffer;
  /** fp8 only: kv_b_proj.weight_scale_inv [ceil(heads * (dn + dv) / 128), ceil(rkv / 128)] f32. */
  kvBScale?: GPUBuffer;
  label?: string;
}

export interface AbsorbQArgs extends MlaAbsorbShape, KvBBuffers {
  /** [rows, heads, dn + dr] f32: q_b_proj's output, RoPE not applied (q is only read). */
  q: GPUBuffer;
  /** [rows, heads, rkv] f32, written: q_nope @ W_UK[h]. */
  qLat: GPUBuffer;
  /** [rows, heads, dr] f32, written: the rope part of q with RoPE applied at positions[r]. */
  qPe: GPUBuffer;
  /** [rows] u32 absolute positions. */
  positions: GPUBuffer;
  /** [dr / 2] f32 YaRN inverse frequencies (ropeInvFreq of src/kernels/rope_tables.ts). */
  invFreq: GPUBuffer;
}

export interface ExpandOArgs extends MlaAbsorbShape, KvBBuffers {
  /** [rows, heads, rkv] f32: the attention output in the latent space. */
  oLat: GPUBuffer;
  /** [rows, heads * dv] f32, written: o[r, h, v] = sum_c oLat[r, h, c] * W_UV[h][v, c]. */
  o: GPUBuffer;
}

export interface MlaAbsorb<Args> extends Kernel<Args> {
  readonly weights: WeightFormat;
}

const WEIGHT_BYTES: Record<WeightFormat, number> = { fp8: 1, bf16: 2, f32: 4 };

/** shaders/kv_b_proj.wgsl and the e4m3 decode it uses: kv_b_proj's loaders, for every kernel that reads W_UK or W_UV. */
export const KV_B_SNIPPETS = [
  { name: 'fp8_e4m3.wgsl', code: fp8Source },
  { name: 'kv_b_proj.wgsl', code: kvBSource },
] as const;

/** Bytes of kv_b_proj.weight and of its scales (0 unless fp8). */
export function kvBBytes({ heads, qkNopeHeadDim: dn, vHeadDim: dv, kvLoraRank: rkv }: Pick<MlaAbsorbShape, 'heads' | 'qkNopeHeadDim' | 'vHeadDim' | 'kvLoraRank'>, weights: WeightFormat) {
  const weightRows = heads * (dn + dv);
  return {
    weight: WEIGHT_BYTES[weights] * weightRows * rkv,
    scale: weights === 'fp8' ? 4 * Math.ceil(weightRows / BLOCK) * Math.ceil(rkv / BLOCK) : 0,
  };
}

/**
 * Unique bytes read and written, and 2 FLOPs per multiply-add, for the benchmark's napkin math:
 * absorb_q reads q, the W_UK rows, positions and the frequency table, writes q_lat and q_pe
 * (RoPE's 34 FLOPs per pair counted as in ropeYarnCost); expand_o reads o_lat and the W_UV rows,
 * writes o. The block scales are counted whole (a few hundred bytes).
 */
export function mlaAbsorbCost(args: MlaAbsorbShape & { step: MlaAbsorbStep; weights: WeightFormat }): Cost {
  const { step, weights, rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = args;
  const scale = kvBBytes(args, weights).scale;
  const wb = WEIGHT_BYTES[weights];
  if (step === 'absorb_q') {
    return {
      bytes: 4 * rows * heads * (dn + dr) + wb * heads * dn * rkv + scale + 4 * rows + 2 * dr + 4 * rows * heads * (rkv + dr),
      flops: 2 * rows * heads * dn * rkv + 17 * rows * heads * dr,
    };
  }
  return { bytes: 4 * rows * heads * rkv + wb * heads * dv * rkv + scale + 4 * rows * heads * dv, flops: 2 * rows * heads * dv * rkv };
}

function absorbKernel(ctx: KernelContext, options: MlaAbsorbOptions) {
  const { device } = ctx.gpu;
  const weights = options.weights ?? 'fp8';
  if (!WEIGHT_FORMATS.includes(weights)) throw new ArgumentError(`mla_absorb: weights "${weights}" is not one of ${WEIGHT_FORMATS.join(', ')}`);
  const workgroupSize = options.workgroupSize ?? 64;
  checkCounts('mla_absorb', { workgroupSize });
  // One pipeline per step and per rkv % 4 == 0 or not (RKV_ALIGNED: quads of kv_b_proj columns
  // are whole words), made on first use. absorb_q applies RoPE with rope_rotate.wgsl's function.
  const pipeline = (step: MlaAbsorbStep, rkv: number): CachedPipeline =>
    kernelPipeline(ctx.pipelines, {
      kernel: 'mla_absorb',
      source: absorbSource,
      snippets: [...KV_B_SNIPPETS, ...(step === 'absorb_q' ? [ROPE_ROTATE_SNIPPET] : [])],
      axes: { step: MLA_ABSORB_STEPS, weights: WEIGHT_FORMATS },
      variant: { step, weights },
      constants: { WORKGROUP_SIZE: workgroupSize, RKV_ALIGNED: rkv % 4 === 0 ? 1 : 0 },
      // params, input, kv_b_proj, output, [scales], [q_pe, positions, inv_freq]
      bindings: [
        'uniform', 'read-only-storage', 'read-only-storage', 'storage', weights === 'fp8' ? 'read-only-storage' : undefined,
        ...(step === 'absorb_q' ? (['storage', 'read-only-storage', 'read-only-storage'] as const) : []),
      ],
    });

  /**
   * Checks, params and bind group of one call; `io` holds bindings 1, 3 and (absorb_q) 5 with the
   * bytes each needs, `rope` (absorb_q) the read-only bindings 6 and 7.
   */
  function prepare(step: MlaAbsorbStep, args: MlaAbsorbShape & KvBBuffers, io: [string, GPUBuffer, number][], rope: [string, GPUBuffer, number][] = []): PreparedCall {
    const label = args.label ?? `mla_absorb.${step}`;
    checkShape(label, args);
    const kv = kvBBytes(args, weights);
    if (weights === 'fp8' && !args.kvBScale) {
      throw new ArgumentError(`${label}: kvBScale (kv_b_proj.weight_scale_inv) is required for fp8 weights`);
    }
    if (weights !== 'fp8' && args.kvBScale) throw new ArgumentError(`${label}: kvBScale is not used by ${weights} weights`);
    const buffers: [string, GPUBuffer, number][] = [...io, ...rope, ['kvB', args.kvB, kv.weight]];
    if (args.kvBScale) buffers.push(['kvBScale', args.kvBScale, kv.scale]);
    const needs: BindingNeeds = Object.fromEntries(buffers.map(([name, buffer, bytes]) => [name, [buffer, bytes] as const]));
    checkBindings(device, label, needs, `${describeShape(args)} (${weights})`);
    // A buffer written by the call may not be bound twice (WebGPU forbids writable aliasing).
    for (const [name, out] of io.slice(1)) {
      if (buffers.filter(([, b]) => b === out).length > 1) throw new ArgumentError(`${label}: ${name} must not share a buffer with another argument`);
    }

    const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = args;
    // absorb_q: a quad of q_lat columns per invocation, then the q_pe pairs; expand_o: one output each
    const count = rows * heads * (step === 'absorb_q' ? Math.ceil(rkv / 4) + dr / 2 : dv);
    const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32']);
    uniforms.write([rows, heads, dn, dr, dv, rkv, Math.ceil(rkv / BLOCK), count]);
    return singleDispatch({
      device,
      label,
      pipeline: pipeline(step, rkv),
      uniforms,
      bindings: [io[0][1], args.kvB, io[1][1], args.kvBScale, io[2]?.[1], ...rope.map(([, buffer]) => buffer)],
      workgroups: Math.ceil(count / workgroupSize),
      cost: mlaAbsorbCost({ ...args, step, weights }),
    });
  }

  return { weights, prepare };
}

/** absorb_q: q_nope @ W_UK per head, and q_pe copied out beside it with RoPE applied, before the attention. */
export function createMlaAbsorbQ(ctx: KernelContext, options: MlaAbsorbOptions = {}): MlaAbsorb<AbsorbQArgs> {
  const { weights, prepare } = absorbKernel(ctx, options);
  return {
    name: 'mla_absorb',
    weights,
    prepare(args) {
      const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, kvLoraRank: rkv } = args;
      if (dr % 2 !== 0) throw new ArgumentError(`${args.label ?? 'mla_absorb.absorb_q'}: qkRopeHeadDim ${dr} is odd; RoPE rotates pairs`);
      return prepare(
        'absorb_q',
        args,
        [
          ['q', args.q, 4 * rows * heads * (dn + dr)],
          ['qLat', args.qLat, 4 * rows * heads * rkv],
          ['qPe', args.qPe, 4 * rows * heads * dr],
        ],
        [
          ['positions', args.positions, 4 * rows],
          ['invFreq', args.invFreq, 2 * dr],
        ],
      );
    },
  };
}

/** expand_o: W_UV per head over the attention's latent output, after the attention. */
export function createMlaExpandO(ctx: KernelContext, options: MlaAbsorbOptions = {}): MlaAbsorb<ExpandOArgs> {
  const { weights, prepare } = absorbKernel(ctx, options);
  return {
    name: 'mla_absorb',
    weights,
    prepare(args) {
      const { rows, heads, vHeadDim: dv, kvLoraRank: rkv } = args;
      return prepare('expand_o', args, [
        ['oLat', args.oLat, 4 * rows * heads * rkv],
        ['o', args.o, 4 * rows * heads * dv],
      ]);
    },
  };
}

function describeShape(s: MlaAbsorbShape): string {
  return `rows=${s.rows} heads=${s.heads} dn=${s.qkNopeHeadDim} dr=${s.qkRopeHeadDim} dv=${s.vHeadDim} rkv=${s.kvLoraRank}`;
}

function checkShape(label: string, shape: MlaAbsorbShape): void {
  const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = shape;
  // dr >= 1 too: every DeepSeek config has a RoPE part, and q_pe would be an empty binding without one.
  checkCounts(label, { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv });
  checkU32Indices(label, {
    'kv_b_proj elements': heads * (dn + dv) * rkv,
    'q_lat and q_pe elements': rows * heads * (rkv + dr),
    'q elements': rows * heads * (dn + dr),
  });
}
