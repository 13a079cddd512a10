// One way to get a GPUDevice, in the browser and in Node: `openGpu({ gpu })` takes any `GPU`
// object (navigator.gpu, or Dawn's from src/gpu/node.ts), requests the limits and optional
// features the engine uses, and turns a lost device into a typed error.

import { DeviceLostError, GpuLimitError, GpuOutOfMemoryError, NoWebGPUError } from '../errors.ts';

/** Optional features the engine uses when the adapter has them. */
export const OPTIONAL_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query'] as const;
export type OptionalFeature = (typeof OPTIONAL_FEATURES)[number];

/**
 * Limits the engine asks for: the adapter's maximum for buffer sizes (weights of one
 * tensor can be large), and at least these values for the rest. WebGPU's defaults already
 * satisfy the minimums; the request only fails on adapters below the spec's baseline.
 */
const REQUIRED_LIMITS = {
  maxComputeWorkgroupSizeX: 256,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupStorageSize: 16384,
  maxStorageBuffersPerShaderStage: 8,
} as const;

const TAKE_ADAPTER_MAX = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupsPerDimension',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
] as const;

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** True for CPU adapters (SwiftShader, lavapipe, WARP): kernels pick their CPU-friendly variants. */
  isSoftware: boolean;
  features: Record<OptionalFeature, boolean>;
  limits: Record<(typeof TAKE_ADAPTER_MAX)[number], number>;
}

export interface Gpu {
  device: GPUDevice;
  adapter: AdapterReport;
  /** Resolves (never rejects) with a typed error when the device is lost. */
  lost: Promise<DeviceLostError>;
  /** Set once the device is lost; check before recording work. */
  readonly lostError: DeviceLostError | undefined;
  /** Destroy the device; pending work is abandoned. Safe to call twice. */
  destroy(): void;
}

export interface OpenGpuOptions {
  /** The GPU entry point: navigator.gpu in a browser, `nodeGpu()` in Node. */
  gpu: GPU | undefined | null;
  powerPreference?: GPUPowerPreference;
  /** Turn optional features off, e.g. to test the f32 path on an adapter with shader-f16. */
  disableFeatures?: OptionalFeature[];
  /** A label for the device, shown in driver messages. */
  label?: string;
}

export async function openGpu(options: OpenGpuOptions): Promise<Gpu> {
  const { gpu } = options;
  if (!gpu) {
    throw new NoWebGPUError(
      'WebGPU is not available here: navigator.gpu is missing. Use a browser with WebGPU enabled ' +
        '(Chrome or Edge 113+, Safari 26+, Firefox 141+) on a page served over https or from localhost.',
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? 'high-performance' });
  if (!adapter) {
    throw new NoWebGPUError(
      'WebGPU is present but no GPU adapter is available. The GPU may be blocklisted or disabled; ' +
        'check chrome://gpu, update the graphics driver, or try another browser.',
    );
  }
  return openAdapter(adapter, options);
}

export async function openAdapter(adapter: GPUAdapter, options: Omit<OpenGpuOptions, 'gpu'> = {}): Promise<Gpu> {
  const report = describeAdapter(adapter, options.disableFeatures ?? []);
  for (const [name, min] of Object.entries(REQUIRED_LIMITS)) {
    const have = adapter.limits[name as keyof GPUSupportedLimits] as number;
    if (have < min) {
      throw new GpuLimitError(`This GPU's ${name} is ${have}; webmoe needs at least ${min}.`);
    }
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => report.features[f]) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const name of TAKE_ADAPTER_MAX) requiredLimits[name] = report.limits[name];

  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ label: options.label ?? 'webmoe', requiredFeatures, requiredLimits });
  } catch (cause) {
    throw new NoWebGPUError(`The GPU adapter refused to create a device: ${String(cause)}`, { cause });
  }

  let lostError: DeviceLostError | undefined;
  const lost = device.lost.then((info) => {
    lostError = new DeviceLostError(info.reason ?? 'unknown', info.message ?? '');
    return lostError;
  });
  let destroyed = false;
  return {
    device,
    adapter: report,
    lost,
    get lostError() {
      return lostError;
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      device.destroy();
    },
  };
}

export function describeAdapter(adapter: GPUAdapter, disable: readonly OptionalFeature[] = []): AdapterReport {
  const info = adapter.info;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  const features = {} as Record<OptionalFeature, boolean>;
  for (const f of OPTIONAL_FEATURES) features[f] = adapter.features.has(f) && !disable.includes(f);
  const limits = {} as AdapterReport['limits'];
  for (const name of TAKE_ADAPTER_MAX) limits[name] = adapter.limits[name];
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isSoftware: /swiftshader|llvmpipe|lavapipe|warp|software|cpu/.test(text) || (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true,
    features,
    limits,
  };
}

/**
 * Run `body` inside an out-of-memory error scope: a failed allocation becomes a typed
 * GpuOutOfMemoryError naming `what`, and a validation error becomes a plain Error.
 */
export async function withGpuErrorScope<T>(device: GPUDevice, what: string, body: () => T): Promise<T> {
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  let result: T;
  try {
    result = body();
  } finally {
    // Both pops are issued at once: another task must not push or pop scopes between them.
    const [oom, validation] = await Promise.all([device.popErrorScope(), device.popErrorScope()]);
    if (oom) {
      throw new GpuOutOfMemoryError(
        `Out of GPU memory while allocating ${what}. Close other GPU-heavy tabs or load a smaller model.`,
      );
    }
    if (validation) throw new GpuLimitError(`WebGPU refused ${what}: ${validation.message}`);
  }
  return result;
}
