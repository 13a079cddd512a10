// The step probe sees what a step records from outside: its dispatches and passes, the CPU time
// from its first WebGPU call to its submit, and (SwiftShader has timestamp queries) its GPU time.

import { describe, expect, it } from 'vitest';
import fmaSource from '../../shaders/bench_fma.wgsl?raw';
import { createBindGroup, kernelPipeline } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { testGpu } from '../gpu/testing.ts';
import { installStepProbe } from './step_probe.ts';

async function setup() {
  const gpu = await testGpu();
  const { device } = gpu;
  const out = device.createBuffer({ size: 4 * 64 * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const pipeline = kernelPipeline(new PipelineCache(device), { kernel: 'bench_fma', source: fmaSource, constants: { ITERATIONS: 64 }, bindings: ['storage'] });
  const group = createBindGroup(device, 'bench_fma', pipeline, [out]);
  /** One step: a uniform-like write, `passes` compute passes of `perPass` dispatches, one submit. */
  const step = (passes: number, perPass: number) => {
    device.queue.writeBuffer(out, 0, new Float32Array(4));
    const encoder = device.createCommandEncoder();
    for (let p = 0; p < passes; p++) {
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline.pipeline);
      pass.setBindGroup(0, group);
      for (let d = 0; d < perPass; d++) pass.dispatchWorkgroups(4);
      pass.end();
    }
    device.queue.submit([encoder.finish()]);
  };
  return { gpu, out, step };
}

describe('installStepProbe', () => {
  it('records each submit with its dispatches, passes and CPU time, and restores the methods', async () => {
    const { gpu, out, step } = await setup();
    const probe = installStepProbe();
    try {
      step(2, 3);
      step(1, 5);
    } finally {
      probe.uninstall();
    }
    step(1, 1); // after uninstall: not seen
    await gpu.device.queue.onSubmittedWorkDone();
    expect(probe.timestamps).toBe(false);
    expect(probe.records.map((r) => [r.dispatches, r.passes])).toEqual([[6, 2], [5, 1]]);
    for (const r of probe.records) {
      expect(r.cpuMs).toBeGreaterThan(0);
      expect(r.gpuMs).toBeUndefined();
    }
    expect(() => installStepProbe().uninstall()).not.toThrow(); // installable again
    out.destroy();
  });

  it("with the device, times each step's passes on the GPU", async () => {
    const { gpu, out, step } = await setup();
    expect(gpu.device.features.has('timestamp-query')).toBe(true); // SwiftShader has them
    const probe = installStepProbe({ device: gpu.device });
    try {
      step(3, 2);
    } finally {
      probe.uninstall();
    }
    await probe.settled();
    expect(probe.timestamps).toBe(true);
    expect(probe.records).toHaveLength(1);
    expect(probe.records[0]).toMatchObject({ dispatches: 6, passes: 3 });
    expect(probe.records[0].gpuMs).toBeGreaterThan(0);
    out.destroy();
  });

  it('refuses a second probe while one is installed', () => {
    const probe = installStepProbe();
    try {
      expect(() => installStepProbe()).toThrow(/already installed/);
    } finally {
      probe.uninstall();
    }
  });
});
