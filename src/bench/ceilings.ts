// The adapter's ceilings, measured in the same run as the kernels: buffer copy bandwidth
// (copyBufferToBuffer, read + write bytes) and f32 FMA throughput (shaders/bench_fma.wgsl).
// Every kernel's GB/s and GFLOP/s is reported as a fraction of these.

import fmaSource from '../../shaders/bench_fma.wgsl?raw';
import type { Gpu } from '../gpu/device.ts';
import { createBindGroup, dispatch, kernelPipeline } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { timeAsync, timeComputePass } from '../gpu/timing.ts';

export interface Ceilings {
  copyGbps: number;
  fmaGflops: number;
}

export async function measureCeilings(gpu: Gpu, options: { quick?: boolean } = {}): Promise<Ceilings> {
  const { device } = gpu;
  // Large enough to leave the caches; smaller on CPU adapters, where a copy is a memcpy.
  const bytes = Math.min((gpu.adapter.isSoftware || options.quick ? 64 : 512) << 20, gpu.adapter.limits.maxBufferSize);
  const src = device.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.STORAGE });
  const dst = device.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
  const copy = await timeAsync(async () => {
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(src, 0, dst, 0, bytes);
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  }, { warmup: 2, runs: options.quick ? 3 : 7 });
  src.destroy();
  dst.destroy();

  const iterations = 1024;
  const workgroups = gpu.adapter.isSoftware || options.quick ? 256 : 16384;
  const out = device.createBuffer({ size: workgroups * 64 * 4, usage: GPUBufferUsage.STORAGE });
  const pipeline = kernelPipeline(new PipelineCache(device), { kernel: 'bench_fma', source: fmaSource, constants: { ITERATIONS: iterations }, bindings: ['storage'] });
  const fmaDispatch = dispatch(device, pipeline, createBindGroup(device, 'bench_fma', pipeline, [out]), workgroups);
  const fma = await timeComputePass(gpu, (pass) => fmaDispatch.encode(pass), { warmup: 2, runs: options.quick ? 3 : 7 });
  out.destroy();
  const flops = workgroups * 64 * iterations * 8 * 2;
  return { copyGbps: (2 * bytes) / (copy.medianMs * 1e6), fmaGflops: flops / (fma.medianMs * 1e6) };
}
