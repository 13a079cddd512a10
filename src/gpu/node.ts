// Dawn's WebGPU for Node (the `webgpu` package). When no hardware adapter answers, fall back
// to SwiftShader, the CPU Vulkan driver that Debian's chromium package ships, so tests,
// the CLI and benchmarks run on machines without a GPU.

import { existsSync } from 'node:fs';
import { NoWebGPUError } from '../errors.ts';
import { openAdapter, type Gpu, type OpenGpuOptions } from './device.ts';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

export interface NodeGpuOptions extends Omit<OpenGpuOptions, 'gpu'> {
  /** 'auto' (hardware, then SwiftShader), 'hardware' only, or 'swiftshader' only. */
  adapter?: 'auto' | 'hardware' | 'swiftshader';
  /** The SwiftShader Vulkan ICD manifest. */
  swiftshaderIcd?: string;
}

type DawnModule = { create(flags: string[]): GPU; globals: Record<string, unknown> };

let dawn: DawnModule | undefined;
async function loadDawn(): Promise<DawnModule> {
  if (!dawn) {
    try {
      dawn = (await import('webgpu')) as unknown as DawnModule;
    } catch (cause) {
      throw new NoWebGPUError(`The 'webgpu' package (Dawn for Node) could not be loaded: ${String(cause)}. Run npm install.`, {
        cause,
      });
    }
    // GPUBufferUsage, GPUMapMode, ... as in a browser.
    for (const [k, v] of Object.entries(dawn.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  return dawn;
}

/**
 * Dawn instances made so far. They must outlive their adapters and devices: a GPU object that
 * is garbage-collected takes the native instance with it, and the next queue operation of a
 * device made from it crashes the process (seen as a futex or mutex abort under memory pressure).
 */
const instances: GPU[] = [];

async function adapterFrom(d: DawnModule): Promise<GPUAdapter | null> {
  const gpu = d.create(['backend=vulkan']);
  instances.push(gpu);
  return gpu.requestAdapter({ powerPreference: 'high-performance' });
}

/** Open a GPU device in Node. */
export async function openNodeGpu(options: NodeGpuOptions = {}): Promise<Gpu> {
  const d = await loadDawn();
  const mode = options.adapter ?? 'auto';
  let adapter: GPUAdapter | null = null;
  if (mode !== 'swiftshader' && !process.env.VK_ICD_FILENAMES?.includes('swiftshader')) adapter = await adapterFrom(d);
  if (!adapter && mode !== 'hardware') {
    const icd = options.swiftshaderIcd ?? SWIFTSHADER_ICD;
    if (!existsSync(icd)) {
      throw new NoWebGPUError(
        `No GPU adapter was found and the SwiftShader fallback is missing (${icd}). ` +
          'Install Debian\'s chromium package (apt-get install chromium libvulkan1), or run on a machine with a GPU.',
      );
    }
    // The Vulkan loader reads this when Dawn creates its instance: point it at SwiftShader only.
    process.env.VK_ICD_FILENAMES = icd;
    adapter = await adapterFrom(d);
  }
  if (!adapter) {
    throw new NoWebGPUError(
      'No WebGPU adapter was found. Install the Vulkan loader (apt-get install libvulkan1) and a Vulkan driver, ' +
        'or Debian\'s chromium for the SwiftShader fallback.',
    );
  }
  return openAdapter(adapter, options);
}
