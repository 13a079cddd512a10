// Dawn's WebGPU for Node (the `webgpu` package). When no hardware adapter answers, fall back
// to SwiftShader, the CPU Vulkan driver that Debian's chromium package ships, so tests,
// the CLI and benchmarks run on machines without a GPU.
//
// The Vulkan drivers and Dawn print to the process's stderr natively, where no JS can catch it:
// opening the GPU must leave stderr to the caller (the CLI's progress and its one error line), so
// the two sources of that noise are avoided rather than filtered (withoutWaylandComplaint, mayHaveGpu).

import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
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
 * Runs `probe` with XDG_RUNTIME_DIR pointed at a private empty folder when the variable is unset
 * (servers, containers, CI), then puts it back and removes the folder. A Vulkan driver's window-
 * system setup (Mesa's lavapipe, loaded with the others) looks for a Wayland display while the
 * adapters are enumerated, and libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in
 * the environment." each time the variable is unset; an empty folder gives the same answer, no
 * display, without the line.
 */
async function withoutWaylandComplaint<T>(probe: () => Promise<T>): Promise<T> {
  const current = process.env.XDG_RUNTIME_DIR;
  if (current && isAbsolute(current)) return probe();
  let empty: string;
  try {
    empty = mkdtempSync(join(tmpdir(), 'webmoe-runtime-'));
  } catch {
    return probe(); // no writable temp folder: the lines stay, the probe is the same
  }
  process.env.XDG_RUNTIME_DIR = empty;
  try {
    return await probe();
  } finally {
    if (current === undefined) delete process.env.XDG_RUNTIME_DIR;
    else process.env.XDG_RUNTIME_DIR = current;
    rmSync(empty, { recursive: true, force: true });
  }
}

/**
 * Whether a hardware Vulkan driver could find a GPU here. On Linux it needs a device node: a DRM
 * node (/dev/dri, Mesa's drivers), NVIDIA's /dev/nvidia*, or WSL's /dev/dxg. Without one, the
 * hardware probe can only fail, and on the way the loader and Dawn print a complaint about each
 * driver installed ("Vulkan shaderUniform*ArrayDynamicIndexing required" for lavapipe, "Failed to
 * detect any valid GPUs" for the others), so 'auto' skips it. Other systems are probed.
 */
function mayHaveGpu(): boolean {
  if (process.platform !== 'linux') return true;
  if (existsSync('/dev/dri') || existsSync('/dev/dxg')) return true;
  try {
    return readdirSync('/dev').some((name) => name.startsWith('nvidia'));
  } catch {
    return true; // no /dev to read: probe, as before
  }
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
  return withoutWaylandComplaint(() => gpu.requestAdapter({ powerPreference: 'high-performance' }));
}

/** Open a GPU device in Node. */
export async function openNodeGpu(options: NodeGpuOptions = {}): Promise<Gpu> {
  const d = await loadDawn();
  const mode = options.adapter ?? 'auto';
  let adapter: GPUAdapter | null = null;
  // Drivers the user chose (VK_ICD_FILENAMES) are probed whatever /dev shows.
  const chosen = process.env.VK_ICD_FILENAMES;
  const probeHardware = mode === 'hardware' || (mode === 'auto' && (chosen !== undefined || mayHaveGpu()));
  if (probeHardware && !chosen?.includes('swiftshader')) adapter = await adapterFrom(d);
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
