// RoPE (YaRN frequencies) kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs.
// Shader: shaders/rope_yarn.wgsl, with the rotation of shaders/rope_rotate.wgsl (which absorb_q of
// mla_absorb shares for q_pe); reference: rope_yarn.ref.ts; the frequency table comes from
// src/kernels/rope_tables.ts (ropeInvFreq). Applied in place to rope slices such as k_pe (the last dr
// of each kv_a_proj_with_mqa row [T, rkv + dr]) or q's rope parts ([T, H, dq], the last dr of each head).
//
// Positions come from a GPU buffer, one u32 per row: a prefill chunk writes start_pos .. start_pos+T-1
// (writeConsecutivePositions), a decode step its position, and a batch of sessions any mix,
// without changing the kernel or reading anything back.

import shaderSource from '../../shaders/rope_yarn.wgsl?raw';
import rotateSource from '../../shaders/rope_rotate.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';
import type { RopeSlices } from './rope_yarn.ref.ts';

export type { RopeSlices } from './rope_yarn.ref.ts';

const WG = 64;

/** shaders/rope_rotate.wgsl: `rope_rotate` and its sin/cos, for every kernel that applies RoPE. */
export const ROPE_ROTATE_SNIPPET = { name: 'rope_rotate.wgsl', code: rotateSource } as const;

/**
 * Bytes and FLOPs for the benchmark: each pair is read and written (16 bytes), plus the
 * positions and the table; 34 FLOPs per pair as the shader counts them (1 for the angle,
 * 27 in sin_cos, 6 for the rotation).
 */
export function ropeYarnCost({ rows, heads, ropeDim }: Pick<RopeSlices, 'rows' | 'heads' | 'ropeDim'>): Cost {
  const pairs = (rows * heads * ropeDim) / 2;
  return { bytes: 16 * pairs + 4 * rows + 2 * ropeDim, flops: 34 * pairs };
}

export interface RopeYarnArgs extends RopeSlices {
  /** f32, rotated in place; see RopeSlices for the addressing. */
  x: GPUBuffer;
  /** [rows] u32 absolute positions. */
  positions: GPUBuffer;
  /** [ropeDim / 2] f32, ropeInvFreq(config) uploaded once. */
  invFreq: GPUBuffer;
  label?: string;
}

export function createRopeYarn(ctx: KernelContext): Kernel<RopeYarnArgs> {
  const { device } = ctx.gpu;
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'rope_yarn',
    source: shaderSource,
    snippets: [ROPE_ROTATE_SNIPPET],
    constants: { WG },
    bindings: ['uniform', 'storage', 'read-only-storage', 'read-only-storage'],
  });
  return {
    name: 'rope_yarn',
    prepare(args) {
      const { rows, heads, ropeDim, rowStride, headStride, ropeOffset } = args;
      const label = args.label ?? 'rope_yarn';
      if (!(ropeDim > 0) || ropeDim % 2 !== 0) throw new ArgumentError(`${label}: ropeDim must be positive and even, got ${ropeDim}`);
      checkCounts(label, { rows, rowStride, headStride, ropeOffset }, 0);
      checkCounts(label, { heads });
      const last = rows === 0 ? 0 : (rows - 1) * rowStride + (heads - 1) * headStride + ropeOffset + ropeDim;
      checkBindings(device, label, { x: [args.x, 4 * last], positions: [args.positions, 4 * rows], invFreq: [args.invFreq, 2 * ropeDim] });
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32']);
      uniforms.write([rows, heads, ropeDim / 2, rowStride, headStride, ropeOffset]);
      return singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [args.x, args.positions, args.invFreq],
        workgroups: Math.ceil((rows * heads * ropeDim) / 2 / WG),
        cost: ropeYarnCost(args),
      });
    },
  };
}

/** Writes start, start + 1, ..., start + count - 1 into a positions buffer (a prefill chunk). */
export function writeConsecutivePositions(device: GPUDevice, positions: GPUBuffer, start: number, count: number): void {
  const values = new Uint32Array(count);
  for (let t = 0; t < count; t++) values[t] = start + t;
  device.queue.writeBuffer(positions, 0, values);
}

