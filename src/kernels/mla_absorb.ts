// The per-head products of absorbed MLA with kv_b_proj (DEEPSEEK_V3_MATH.md 4.4): before attention
// over the latent cache, q_lat = q_nope @ W_UK[h] (and q_pe copied out beside it); after it,
// o = W_UV[h] @ o_lat. kv_b_proj stays as the checkpoint stores it, one [heads * (dn + dv), rkv]
// matrix with its 128 x 128 block scales; the kernel finds W_UK[h] and W_UV[h] inside it.
// Shader: shaders/mla_absorb.wgsl; reference: mla_absorb.ref.ts.

import absorbSource from '../../shaders/mla_absorb.wgsl?raw';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import { BLOCK, WEIGHT_FORMATS, type PreparedCall, type WeightFormat } from './matmul_operands.ts';
import type { CachedPipeline, PipelineCache } from './pipeline_cache.ts';
import { composeShader } from './shader_compose.ts';

export type { PreparedCall } from './matmul_operands.ts';

/** absorb_q: q_nope @ W_UK and the q_pe copy; expand_o: o_lat @ W_UV^T. */
export const MLA_ABSORB_STEPS = ['absorb_q', 'expand_o'] as const;
export type MlaAbsorbStep = (typeof MLA_ABSORB_STEPS)[number];

export interface MlaAbsorbShape {
  /** Query rows (tokens) of the call. */
  rows: number;
  /** num_attention_heads. */
  heads: number;
  /** dn. */
  qkNopeHeadDim: number;
  /** dr, at least 1 (64 in V3). */
  qkRopeHeadDim: number;
  /** dv. */
  vHeadDim: number;
  /** rkv. */
  kvLoraRank: number;
}

export interface MlaAbsorbOptions {
  cache: PipelineCache;
  /** How kv_b_proj.weight is stored; default fp8 (the release). */
  weights?: WeightFormat;
  /** Invocations per workgroup, default 64. A tuning number. */
  workgroupSize?: number;
}

/** kv_b_proj of one layer, as in the checkpoint. */
interface KvBBuffers {
  /** kv_b_proj.weight [heads * (dn + dv), rkv]: e4m3 bytes, bf16 or f32 by `weights`. */
  kvB: GPUBuffer;
  /** fp8 only: kv_b_proj.weight_scale_inv [ceil(heads * (dn + dv) / 128), ceil(rkv / 128)] f32. */
  kvBScale?: GPUBuffer;
  label?: string;
}

export interface MlaAbsorb {
  readonly weights: WeightFormat;
  /**
   * q [rows, heads, dn+dr] f32 (RoPE already applied to the last dr of each head) -> qLat [rows, heads, rkv]
   * = q_nope @ W_UK[h], and qPe [rows, heads, dr] = a copy of the rope part.
   */
  prepareQ(args: MlaAbsorbShape & KvBBuffers & { q: GPUBuffer; qLat: GPUBuffer; qPe: GPUBuffer }): PreparedCall;
  /** oLat [rows, heads, rkv] -> o [rows, heads * dv]: o[r, h, v] = sum_c oLat[r, h, c] * W_UV[h][v, c]. */
  prepareO(args: MlaAbsorbShape & KvBBuffers & { oLat: GPUBuffer; o: GPUBuffer }): PreparedCall;
}

const WEIGHT_BYTES: Record<WeightFormat, number> = { fp8: 1, bf16: 2, f32: 4 };

/** Bytes of kv_b_proj.weight and of its scales (0 unless fp8). */
function kvBBytes({ heads, qkNopeHeadDim: dn, vHeadDim: dv, kvLoraRank: rkv }: MlaAbsorbShape, weights: WeightFormat) {
  const weightRows = heads * (dn + dv);
  return {
    weight: WEIGHT_BYTES[weights] * weightRows * rkv,
    scale: weights === 'fp8' ? 4 * Math.ceil(weightRows / BLOCK) * Math.ceil(rkv / BLOCK) : 0,
  };
}

/**
 * Unique bytes read and written, and 2 FLOPs per multiply-add, for the benchmark's napkin math:
 * absorb_q reads q and the W_UK rows, writes q_lat and q_pe; expand_o reads o_lat and the W_UV
 * rows, writes o. The block scales are counted whole (a few hundred bytes).
 */
export function mlaAbsorbCost(args: MlaAbsorbShape & { step: MlaAbsorbStep; weights: WeightFormat }): { bytes: number; flops: number } {
  const { step, weights, rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = args;
  const scale = kvBBytes(args, weights).scale;
  const wb = WEIGHT_BYTES[weights];
  if (step === 'absorb_q') {
    return {
      bytes: 4 * rows * heads * (dn + dr) + wb * heads * dn * rkv + scale + 4 * rows * heads * (rkv + dr),
      flops: 2 * rows * heads * dn * rkv,
    };
  }
  return { bytes: 4 * rows * heads * rkv + wb * heads * dv * rkv + scale + 4 * rows * heads * dv, flops: 2 * rows * heads * dv * rkv };
}

export function createMlaAbsorb(options: MlaAbsorbOptions): MlaAbsorb {
  const { cache } = options;
  const { device } = cache;
  const weights = options.weights ?? 'fp8';
  if (!WEIGHT_FORMATS.includes(weights)) throw new ArgumentError(`mla_absorb: weights "${weights}" is not one of ${WEIGHT_FORMATS.join(', ')}`);
  const workgroupSize = options.workgroupSize ?? 64;
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1) {
    throw new ArgumentError(`mla_absorb: workgroupSize ${workgroupSize} must be a positive integer`);
  }
  // One pipeline per step and per rkv % 4 == 0 or not (RKV_ALIGNED: quads of kv_b_proj columns
  // are whole words), made on first use.
  const pipeline = (step: MlaAbsorbStep, rkv: number): CachedPipeline =>
    cache.get({ kernel: 'mla_absorb', variant: { step, weights }, constants: { WORKGROUP_SIZE: workgroupSize, RKV_ALIGNED: rkv % 4 === 0 ? 1 : 0 } }, () => ({
      code: composeShader({
        kernel: { name: 'mla_absorb.wgsl', code: absorbSource },
        snippets: [{ name: 'fp8_e4m3.wgsl', code: fp8Source }],
        axes: { step: MLA_ABSORB_STEPS, weights: WEIGHT_FORMATS },
        variant: { step, weights },
      }),
      entries: layoutEntries(step, weights),
    }));

  /** Checks, params and bind group of one call; `io` holds bindings 1, 3 and (absorb_q) 5 with the bytes each needs. */
  function prepare(step: MlaAbsorbStep, args: MlaAbsorbShape & KvBBuffers, io: [string, GPUBuffer, number][]): PreparedCall {
    const label = args.label ?? `mla_absorb.${step}`;
    checkShape(label, args);
    const kv = kvBBytes(args, weights);
    if (weights === 'fp8' && !args.kvBScale) {
      throw new ArgumentError(`${label}: kvBScale (kv_b_proj.weight_scale_inv) is required for fp8 weights`);
    }
    if (weights !== 'fp8' && args.kvBScale) throw new ArgumentError(`${label}: kvBScale is not used by ${weights} weights`);
    const buffers: [string, GPUBuffer, number][] = [...io, ['kvB', args.kvB, kv.weight]];
    if (args.kvBScale) buffers.push(['kvBScale', args.kvBScale, kv.scale]);
    const shape = describeShape(args);
    for (const [name, buffer, bytes] of buffers) {
      if (buffer.size < bytes) throw new ArgumentError(`${label}: ${name} holds ${buffer.size} bytes, ${shape} (${weights}) needs ${bytes}`);
      if (bytes > device.limits.maxStorageBufferBindingSize) {
        throw new GpuLimitError(
          `${label}: ${name} needs a ${bytes}-byte binding, over this GPU's maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
        );
      }
    }
    // A buffer written by the call may not be bound twice (WebGPU forbids writable aliasing).
    for (const [name, out] of io.slice(1)) {
      if (buffers.filter(([, b]) => b === out).length > 1) throw new ArgumentError(`${label}: ${name} must not share a buffer with another argument`);
    }

    const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = args;
    // absorb_q: a quad of q_lat columns per invocation, then the q_pe copies; expand_o: one output each
    const count = rows * heads * (step === 'absorb_q' ? Math.ceil(rkv / 4) + dr : dv);
    const params = device.createBuffer({ label: `${label}.params`, size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(params, 0, new Uint32Array([rows, heads, dn, dr, dv, rkv, Math.ceil(rkv / BLOCK), count]));
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: params } },
      { binding: 1, resource: { buffer: io[0][1] } },
      { binding: 2, resource: { buffer: args.kvB } },
      { binding: 3, resource: { buffer: io[1][1] } },
    ];
    if (args.kvBScale) entries.push({ binding: 4, resource: { buffer: args.kvBScale } });
    if (io[2]) entries.push({ binding: 5, resource: { buffer: io[2][1] } });
    const stepPipeline = pipeline(step, rkv);
    const bindGroup = device.createBindGroup({ label, layout: stepPipeline.bindGroupLayout, entries });
    const [gx, gy] = workgroupGrid(Math.ceil(count / workgroupSize), device.limits.maxComputeWorkgroupsPerDimension);
    return {
      ...mlaAbsorbCost({ ...args, step, weights }),
      encode(pass) {
        pass.setPipeline(stepPipeline.pipeline);
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(gx, gy);
      },
      destroy() {
        params.destroy();
      },
    };
  }

  return {
    weights,
    prepareQ(args) {
      const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, kvLoraRank: rkv } = args;
      return prepare('absorb_q', args, [
        ['q', args.q, 4 * rows * heads * (dn + dr)],
        ['qLat', args.qLat, 4 * rows * heads * rkv],
        ['qPe', args.qPe, 4 * rows * heads * dr],
      ]);
    },
    prepareO(args) {
      const { rows, heads, vHeadDim: dv, kvLoraRank: rkv } = args;
      return prepare('expand_o', args, [
        ['oLat', args.oLat, 4 * rows * heads * rkv],
        ['o', args.o, 4 * rows * heads * dv],
      ]);
    },
  };
}

function layoutEntries(step: MlaAbsorbStep, weights: WeightFormat): GPUBindGroupLayoutEntry[] {
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type },
  });
  const entries = [entry(0, 'uniform'), entry(1, 'read-only-storage'), entry(2, 'read-only-storage'), entry(3, 'storage')];
  if (weights === 'fp8') entries.push(entry(4, 'read-only-storage'));
  if (step === 'absorb_q') entries.push(entry(5, 'storage'));
  return entries;
}

function describeShape(s: MlaAbsorbShape): string {
  return `rows=${s.rows} heads=${s.heads} dn=${s.qkNopeHeadDim} dr=${s.qkRopeHeadDim} dv=${s.vHeadDim} rkv=${s.kvLoraRank}`;
}

function checkShape(label: string, shape: MlaAbsorbShape): void {
  const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = shape;
  // dr >= 1 too: every DeepSeek config has a RoPE part, and q_pe would be an empty binding without one.
  for (const [name, value] of Object.entries({ rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv })) {
    if (!Number.isInteger(value) || value < 1) throw new ArgumentError(`${label}: ${name} must be a positive integer, got ${value}`);
  }
  // Element indices are u32 in the shader.
  const largest = Math.max(heads * (dn + dv) * rkv, rows * heads * (rkv + dr), rows * heads * (dn + dr));
  if (largest >= 2 ** 32) throw new ArgumentError(`${label}: ${describeShape(shape)} overflows 32-bit element indices`);
}
