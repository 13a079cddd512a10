// Sampling kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs. Shader:
// shaders/sample.wgsl; reference: sample.ref.ts. Turns the head's logits [rows, vocab] into token
// ids [rows] on the GPU (rows: the decode step, or the MTP verify step), so that only ids are
// read back. The sampling settings change per call through `setSampling` (one small uniform write).

import shaderSource from '../../shaders/sample.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import type { SamplingParams } from './sample.ref.ts';

export type { SamplingParams } from './sample.ref.ts';

export interface SampleVariant {
  /** A CPU adapter (AdapterReport.isSoftware): fewer invocations per row and serial reductions, so fewer barriers. */
  isSoftware: boolean;
}

export interface SamplePipeline {
  readonly variant: SampleVariant;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  /** Invocations per workgroup; one workgroup per row. */
  readonly workgroupSize: number;
  /** Bits of the top-k/top-p cut found per pass. */
  readonly radixBits: number;
}

// Workgroup memory of the histograms: workgroupSize * 2^radixBits * 8 bytes (8 KiB, 2 KiB).
// On SwiftShader the cost grows with the invocations per workgroup far more than with the work:
// 16 run 4000 small rows 5x faster than 64, and a 129280-wide row as fast.
const GPU_TUNING = { workgroupSize: 256, radixBits: 2 };
const SOFTWARE_TUNING = { workgroupSize: 16, radixBits: 4 };

/** Builds the pipeline of one variant (the one place to move onto the shared pipeline cache). */
export function createSamplePipeline(device: GPUDevice, variant: SampleVariant): SamplePipeline {
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type },
  });
  const name = `sample${variant.isSoftware ? '/software' : ''}`;
  const layout = device.createBindGroupLayout({
    label: name,
    entries: [entry(0, 'uniform'), entry(1, 'read-only-storage'), entry(2, 'storage')],
  });
  const { workgroupSize, radixBits } = variant.isSoftware ? SOFTWARE_TUNING : GPU_TUNING;
  const pipeline = device.createComputePipeline({
    label: name,
    layout: device.createPipelineLayout({ label: name, bindGroupLayouts: [layout] }),
    compute: {
      module: device.createShaderModule({ label: 'sample.wgsl', code: shaderSource }),
      entryPoint: 'sample',
      constants: { WG: workgroupSize, SERIAL_REDUCE: variant.isSoftware ? 1 : 0, RADIX_BITS: radixBits },
    },
  });
  return { variant, pipeline, layout, workgroupSize, radixBits };
}

/** Passes over a row the kernel makes (at most: the tie pass is skipped without ties). */
export function samplePasses(vocab: number, p: SamplingParams, radixBits: number): number {
  if (p.temperature <= 0) return 1;
  const search = 32 / radixBits;
  let passes = 2;
  if (p.topK > 0 && p.topK < vocab) passes += search + 3;
  if (p.topP < 1) passes += search + 3;
  return passes;
}

export interface SampleShape {
  rows: number;
  vocab: number;
  sampling: SamplingParams;
  /** SamplePipeline.radixBits. */
  radixBits: number;
}

/**
 * Bytes and FLOPs for the benchmark: every pass reads the row's logits; ~4 FLOPs per element
 * per sampling pass (subtract, divide, exp, add), 1 for the argmax pass; the ids written.
 */
export function sampleCost({ rows, vocab, sampling, radixBits }: SampleShape): { bytes: number; flops: number } {
  const passes = samplePasses(vocab, sampling, radixBits);
  return {
    bytes: 4 * rows * vocab * passes + 4 * rows,
    flops: rows * vocab * (1 + 4 * (passes - 1)),
  };
}

/** Throws an ArgumentError naming the first bad setting. */
export function checkSamplingParams(p: SamplingParams): void {
  const u32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  if (!(Number.isFinite(p.temperature) && p.temperature >= 0)) {
    throw new ArgumentError(`sampling: temperature must be a finite number >= 0, got ${p.temperature}`);
  }
  if (!u32(p.topK)) throw new ArgumentError(`sampling: top_k must be an integer >= 0 (0: off), got ${p.topK}`);
  if (!(p.topP >= 0 && p.topP <= 1)) throw new ArgumentError(`sampling: top_p must be in [0, 1] (1: off), got ${p.topP}`);
  if (!u32(p.seed)) throw new ArgumentError(`sampling: seed must be a u32 integer, got ${p.seed}`);
  if (!u32(p.step)) throw new ArgumentError(`sampling: step must be a u32 integer, got ${p.step}`);
}

export interface SampleArgs {
  rows: number;
  vocab: number;
  /** [rows, vocab] f32 logits. */
  logits: GPUBuffer;
  /** [rows] u32 sampled token ids out. */
  ids: GPUBuffer;
  /** The first call's settings; later calls change them with setSampling. */
  sampling: SamplingParams;
  label?: string;
}

export interface PreparedSample {
  /** For the current settings. */
  readonly bytes: number;
  readonly flops: number;
  /** Write new settings (seed, step, ...) before the next submit that holds the dispatch. */
  setSampling(p: SamplingParams): void;
  /** Record the dispatch into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Free the params buffer. */
  destroy(): void;
}

/** Validates the arguments, writes the params and builds the bind group once. */
export function prepareSample(device: GPUDevice, kernel: SamplePipeline, args: SampleArgs): PreparedSample {
  const { rows, vocab } = args;
  const label = args.label ?? 'sample';
  if (!(Number.isInteger(vocab) && vocab > 0) || !(Number.isInteger(rows) && rows >= 0)) {
    throw new RangeError(`${label}: bad shape rows=${rows} vocab=${vocab}`);
  }
  if (rows * vocab >= 2 ** 32) throw new RangeError(`${label}: rows * vocab = ${rows * vocab} overflows u32 indices`);
  if (args.logits.size < 4 * rows * vocab) throw new RangeError(`${label}: logits is ${args.logits.size} bytes, needs ${4 * rows * vocab}`);
  if (args.ids.size < 4 * rows) throw new RangeError(`${label}: ids is ${args.ids.size} bytes, needs ${4 * rows}`);

  const paramsBuffer = device.createBuffer({ label: `${label}.params`, size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  let current = args.sampling;
  const setSampling = (p: SamplingParams): void => {
    checkSamplingParams(p);
    const params = new ArrayBuffer(32);
    const u = new Uint32Array(params);
    const f = new Float32Array(params);
    u[0] = rows;
    u[1] = vocab;
    f[2] = p.temperature;
    u[3] = p.topK;
    f[4] = p.topP;
    u[5] = p.seed;
    u[6] = p.step;
    device.queue.writeBuffer(paramsBuffer, 0, params);
    current = p;
  };
  setSampling(args.sampling);

  const bindGroup = device.createBindGroup({
    label,
    layout: kernel.layout,
    entries: [
      { binding: 0, resource: { buffer: paramsBuffer } },
      { binding: 1, resource: { buffer: args.logits } },
      { binding: 2, resource: { buffer: args.ids } },
    ],
  });
  const [gx, gy] = workgroupGrid(rows, device.limits.maxComputeWorkgroupsPerDimension);
  return {
    get bytes() {
      return sampleCost({ rows, vocab, sampling: current, radixBits: kernel.radixBits }).bytes;
    },
    get flops() {
      return sampleCost({ rows, vocab, sampling: current, radixBits: kernel.radixBits }).flops;
    },
    setSampling,
    encode(pass) {
      if (rows === 0) return;
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
    destroy() {
      paramsBuffer.destroy();
    },
  };
}
