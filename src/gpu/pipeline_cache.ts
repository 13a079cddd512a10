// Compute pipelines, built once per device and reused by every call of a kernel. The key holds
// only compile-time facts (kernel, named variant, override constants), never runtime shapes:
// shapes travel in uniforms, so one pipeline serves every M, N and K (as onnxruntime-web's
// WebGPU backend keys its programs).

import type { Variant } from './shader_compose.ts';

export interface PipelineKey {
  /** The kernel's file name without extension, e.g. "gemv_fp8". */
  readonly kernel: string;
  readonly variant: Variant;
  /** WGSL `override` values set at pipeline creation (tuning numbers such as a workgroup size). */
  readonly constants: Readonly<Record<string, number>>;
}

/** What a kernel hands the cache the first time a key is asked for. */
export interface PipelineRecipe {
  /** The composed WGSL module. */
  readonly code: string;
  readonly entries: readonly GPUBindGroupLayoutEntry[];
  /** Default "main". */
  readonly entryPoint?: string;
}

export interface CachedPipeline {
  readonly key: string;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroupLayout: GPUBindGroupLayout;
}

/** A canonical string for a key: axes and constants sorted, so their order does not matter. */
export function pipelineKeyString({ kernel, variant, constants }: PipelineKey): string {
  const sorted = (record: Readonly<Record<string, string | number>>) =>
    Object.keys(record)
      .sort()
      .map((name) => `${name}=${record[name]}`)
      .join(',');
  return `${kernel}[${sorted(variant)}]{${sorted(constants)}}`;
}

/** One per GPUDevice; owned by whoever owns the device (the engine, a test file, the benchmark). */
export class PipelineCache {
  readonly device: GPUDevice;
  private readonly pipelines = new Map<string, CachedPipeline>();

  constructor(device: GPUDevice) {
    this.device = device;
  }

  /** Number of distinct pipelines built so far. */
  get size(): number {
    return this.pipelines.size;
  }

  /** The pipeline for `key`, built from `recipe()` the first time (recipe is not called after). */
  get(key: PipelineKey, recipe: () => PipelineRecipe): CachedPipeline {
    const name = pipelineKeyString(key);
    const cached = this.pipelines.get(name);
    if (cached) return cached;
    const { code, entries, entryPoint = 'main' } = recipe();
    const { device } = this;
    const bindGroupLayout = device.createBindGroupLayout({ label: name, entries: [...entries] });
    const pipeline = device.createComputePipeline({
      label: name,
      layout: device.createPipelineLayout({ label: name, bindGroupLayouts: [bindGroupLayout] }),
      compute: {
        module: device.createShaderModule({ label: `${key.kernel}.wgsl`, code }),
        entryPoint,
        constants: { ...key.constants },
      },
    });
    const entry = { key: name, pipeline, bindGroupLayout };
    this.pipelines.set(name, entry);
    return entry;
  }
}
