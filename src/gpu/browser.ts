// The browser's WebGPU: navigator.gpu in a page or a worker.
import { openGpu, type Gpu, type OpenGpuOptions } from './device.ts';

export function browserGpu(): GPU | undefined {
  return (globalThis.navigator as Navigator | undefined)?.gpu;
}

export function openBrowserGpu(options: Omit<OpenGpuOptions, 'gpu'> = {}): Promise<Gpu> {
  return openGpu({ ...options, gpu: browserGpu() });
}
