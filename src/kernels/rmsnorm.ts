// RMSNorm kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs. Shader:
// shaders/rmsnorm.wgsl; reference: rmsnorm.ref.ts. Used for attn_norm, q_a_layernorm,
// kv_a_layernorm (the first kv_lora_rank values of each kv_a_proj_with_mqa row, via xLayout),
// post_attention_layernorm (fused with the residual add) and the final norm.

import shaderSource from '../../shaders/rmsnorm.wgsl?raw';
import type { RowLayout } from './rmsnorm.ref.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';

export type { RowLayout } from './rmsnorm.ref.ts';

export interface RmsNormVariant {
  /** Fuse the residual add: x = x + delta (x updated in place), then y = RMSNorm(x). */
  addResidual: boolean;
  /** A CPU adapter (AdapterReport.isSoftware): one invocation per row, no workgroup barrier. */
  isSoftware: boolean;
}

export interface RmsNormPipeline {
  readonly variant: RmsNormVariant;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  /** Invocations per workgroup: one row per workgroup, or WG rows per workgroup on CPU adapters. */
  readonly workgroupSize: number;
}

const WG_PER_ROW = 256; // GPUs: invocations sharing one row
const WG_ROWS = 64; // CPU adapters: rows per workgroup

/** Builds the pipeline of one variant (the one place to move onto the shared pipeline cache). */
export function createRmsNormPipeline(device: GPUDevice, variant: RmsNormVariant): RmsNormPipeline {
  const entries: GPUBindGroupLayoutEntry[] = [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
    { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
    { binding: 2, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
    { binding: 3, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
  ];
  if (variant.addResidual) {
    entries.push({ binding: 4, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } });
  }
  const name = `rmsnorm${variant.addResidual ? '+residual' : ''}${variant.isSoftware ? '/row-per-thread' : ''}`;
  const layout = device.createBindGroupLayout({ label: name, entries });
  const workgroupSize = variant.isSoftware ? WG_ROWS : WG_PER_ROW;
  const pipeline = device.createComputePipeline({
    label: name,
    layout: device.createPipelineLayout({ label: name, bindGroupLayouts: [layout] }),
    compute: {
      module: device.createShaderModule({ label: 'rmsnorm.wgsl', code: shaderSource }),
      entryPoint: variant.addResidual ? 'add_rmsnorm' : 'rmsnorm',
      constants: { WG: workgroupSize, ROW_PER_THREAD: variant.isSoftware ? 1 : 0 },
    },
  });
  return { variant, pipeline, layout, workgroupSize };
}

export interface RmsNormShape {
  rows: number;
  width: number;
  addResidual?: boolean;
}

/**
 * Bytes moved and FLOPs for the benchmark: x read (and with the residual: delta read, x
 * written), weight read once, y written; 4 FLOPs per element (square, add, two multiplies),
 * one more for the residual add.
 */
export function rmsNormCost({ rows, width, addResidual = false }: RmsNormShape): { bytes: number; flops: number } {
  const n = rows * width;
  return {
    bytes: 4 * (n * (addResidual ? 4 : 2) + width),
    flops: n * (addResidual ? 5 : 4),
  };
}

export interface RmsNormArgs {
  rows: number;
  width: number;
  /** rms_norm_eps of the config. */
  eps: number;
  /** [rows, xLayout.stride] f32: the rows to normalise; with addResidual, the residual stream h. */
  x: GPUBuffer;
  /** [width] f32 norm weight. */
  weight: GPUBuffer;
  /** [rows, yLayout.stride] f32 output. Must not be x. */
  y: GPUBuffer;
  /** addResidual only: [rows, xLayout.stride] f32, added into x. */
  delta?: GPUBuffer;
  /** Default: contiguous rows of `width`. */
  xLayout?: RowLayout;
  yLayout?: RowLayout;
  label?: string;
}

export interface PreparedRmsNorm {
  readonly bytes: number;
  readonly flops: number;
  /** Moves the output rows (y's layout offset) for the next submit, e.g. to a new cache position. */
  setYOffset(offset: number): void;
  /** Record the dispatch into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Free the params buffer. */
  destroy(): void;
}

/** Validates the arguments, writes the params and builds the bind group once. */
export function prepareRmsNorm(device: GPUDevice, kernel: RmsNormPipeline, args: RmsNormArgs): PreparedRmsNorm {
  const { rows, width } = args;
  const label = args.label ?? 'rmsnorm';
  const xl = args.xLayout ?? { stride: width, offset: 0 };
  const yl = args.yLayout ?? { stride: width, offset: 0 };
  if (!(width > 0) || !(rows >= 0)) throw new RangeError(`${label}: bad shape rows=${rows} width=${width}`);
  if (kernel.variant.addResidual !== (args.delta !== undefined)) {
    throw new Error(`${label}: delta must be given exactly when the pipeline fuses the residual add`);
  }
  checkRows(label, 'x', args.x, rows, width, xl);
  checkRows(label, 'y', args.y, rows, width, yl);
  if (args.delta) checkRows(label, 'delta', args.delta, rows, width, xl);
  if (args.weight.size < 4 * width) throw new RangeError(`${label}: weight holds fewer than ${width} f32`);

  const paramsBuffer = device.createBuffer({ label: `${label}.params`, size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const writeParams = (yOffset: number) => {
    const params = new ArrayBuffer(32);
    new Uint32Array(params, 0, 6).set([rows, width, xl.stride, xl.offset, yl.stride, yOffset]);
    new Float32Array(params, 24, 1)[0] = args.eps;
    device.queue.writeBuffer(paramsBuffer, 0, params);
  };
  writeParams(yl.offset);

  const entries: GPUBindGroupEntry[] = [
    { binding: 0, resource: { buffer: paramsBuffer } },
    { binding: 1, resource: { buffer: args.x } },
    { binding: 2, resource: { buffer: args.weight } },
    { binding: 3, resource: { buffer: args.y } },
  ];
  if (args.delta) entries.push({ binding: 4, resource: { buffer: args.delta } });
  const bindGroup = device.createBindGroup({ label, layout: kernel.layout, entries });

  const workgroups = kernel.variant.isSoftware ? Math.ceil(rows / kernel.workgroupSize) : rows;
  const [gx, gy] = workgroupGrid(workgroups, device.limits.maxComputeWorkgroupsPerDimension);
  const cost = rmsNormCost({ rows, width, addResidual: kernel.variant.addResidual });
  return {
    ...cost,
    setYOffset(offset) {
      checkRows(label, 'y', args.y, rows, width, { stride: yl.stride, offset });
      writeParams(offset);
    },
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

function checkRows(label: string, name: string, buffer: GPUBuffer, rows: number, width: number, layout: RowLayout): void {
  if (layout.stride < width && rows > 1) throw new RangeError(`${label}: ${name} rows overlap (stride ${layout.stride} < width ${width})`);
  const needed = rows === 0 ? 0 : 4 * ((rows - 1) * layout.stride + layout.offset + width);
  if (buffer.size < needed) throw new RangeError(`${label}: ${name} is ${buffer.size} bytes, the layout needs ${needed}`);
}

