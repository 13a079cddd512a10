// RoPE (YaRN frequencies) kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs.
// Shader: shaders/rope_yarn.wgsl; reference: rope_yarn.ref.ts; the frequency table comes from
// src/model/rope.ts (ropeInvFreq). Applied in place to q's rope parts ([T, H, dq], the last dr of
// each head) and to k_pe (the last dr of each kv_a_proj_with_mqa row [T, rkv + dr]).
//
// Positions come from a GPU buffer, one u32 per row: a prefill chunk writes start_pos .. start_pos+T-1
// (writeConsecutivePositions), a decode step its position, and a batch of sessions any mix,
// without changing the kernel or reading anything back.

import shaderSource from '../../shaders/rope_yarn.wgsl?raw';
import type { RopeSlices } from './rope_yarn.ref.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';

export type { RopeSlices } from './rope_yarn.ref.ts';

export interface RopeYarnPipeline {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly workgroupSize: number;
}

const WG = 64;

/** Builds the pipeline (the one place to move onto the shared pipeline cache). */
export function createRopeYarnPipeline(device: GPUDevice): RopeYarnPipeline {
  const layout = device.createBindGroupLayout({
    label: 'rope_yarn',
    entries: [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
      { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
      { binding: 2, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
      { binding: 3, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
    ],
  });
  const pipeline = device.createComputePipeline({
    label: 'rope_yarn',
    layout: device.createPipelineLayout({ label: 'rope_yarn', bindGroupLayouts: [layout] }),
    compute: {
      module: device.createShaderModule({ label: 'rope_yarn.wgsl', code: shaderSource }),
      entryPoint: 'main',
      constants: { WG },
    },
  });
  return { pipeline, layout, workgroupSize: WG };
}

/**
 * Bytes and FLOPs for the benchmark: each pair is read and written (16 bytes), plus the
 * positions and the table; 34 FLOPs per pair as the shader counts them (1 for the angle,
 * 27 in sin_cos, 6 for the rotation).
 */
export function ropeYarnCost({ rows, heads, ropeDim }: Pick<RopeSlices, 'rows' | 'heads' | 'ropeDim'>): { bytes: number; flops: number } {
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

export interface PreparedRopeYarn {
  readonly bytes: number;
  readonly flops: number;
  encode(pass: GPUComputePassEncoder): void;
  destroy(): void;
}

/** Validates the arguments, writes the params and builds the bind group once. */
export function prepareRopeYarn(device: GPUDevice, kernel: RopeYarnPipeline, args: RopeYarnArgs): PreparedRopeYarn {
  const { rows, heads, ropeDim, rowStride, headStride, ropeOffset } = args;
  const label = args.label ?? 'rope_yarn';
  if (!(ropeDim > 0) || ropeDim % 2 !== 0) throw new RangeError(`${label}: ropeDim must be positive and even, got ${ropeDim}`);
  if (!(rows >= 0) || !(heads >= 1)) throw new RangeError(`${label}: bad shape rows=${rows} heads=${heads}`);
  const last = rows === 0 ? 0 : (rows - 1) * rowStride + (heads - 1) * headStride + ropeOffset + ropeDim;
  if (args.x.size < 4 * last) throw new RangeError(`${label}: x is ${args.x.size} bytes, the layout needs ${4 * last}`);
  if (args.positions.size < 4 * rows) throw new RangeError(`${label}: positions holds fewer than ${rows} u32`);
  if (args.invFreq.size < 2 * ropeDim) throw new RangeError(`${label}: invFreq holds fewer than ${ropeDim / 2} f32`);

  const params = new Uint32Array([rows, heads, ropeDim / 2, rowStride, headStride, ropeOffset, 0, 0]);
  const paramsBuffer = device.createBuffer({
    label: `${label}.params`,
    size: params.byteLength,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(paramsBuffer, 0, params);
  const bindGroup = device.createBindGroup({
    label,
    layout: kernel.layout,
    entries: [
      { binding: 0, resource: { buffer: paramsBuffer } },
      { binding: 1, resource: { buffer: args.x } },
      { binding: 2, resource: { buffer: args.positions } },
      { binding: 3, resource: { buffer: args.invFreq } },
    ],
  });
  const workgroups = Math.ceil((rows * heads * ropeDim) / 2 / kernel.workgroupSize);
  const [gx, gy] = workgroupGrid(workgroups, device.limits.maxComputeWorkgroupsPerDimension);
  return {
    ...ropeYarnCost(args),
    encode(pass) {
      if (workgroups === 0) return;
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
    destroy() {
      paramsBuffer.destroy();
    },
  };
}

/** Writes start, start + 1, ..., start + count - 1 into a positions buffer (a prefill chunk). */
export function writeConsecutivePositions(device: GPUDevice, positions: GPUBuffer, start: number, count: number): void {
  const values = new Uint32Array(count);
  for (let t = 0; t < count; t++) values[t] = start + t;
  device.queue.writeBuffer(positions, 0, values);
}

