// measureStepCost separates decode steps from the prefill by running the same greedy request
// short and long. Here a stand-in engine submits real (tiny) GPU steps: a prefill of 40
// dispatches, then one step of 7 dispatches per token, or with "speculation" one step of 9
// dispatches per 2 tokens.

import { describe, expect, it } from 'vitest';
import fmaSource from '../../shaders/bench_fma.wgsl?raw';
import { createBindGroup, kernelPipeline } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { testGpu } from '../gpu/testing.ts';
import type { Engine, GenerateChunk, GenerateOptions } from '../runtime/types.ts';
import { measureStepCost } from './step_cost.ts';

async function fakeEngine(prefillDispatches: () => number) {
  const gpu = await testGpu();
  const { device } = gpu;
  const out = device.createBuffer({ size: 4 * 64, usage: GPUBufferUsage.STORAGE });
  const pipeline = kernelPipeline(new PipelineCache(device), { kernel: 'bench_fma', source: fmaSource, constants: { ITERATIONS: 8 }, bindings: ['storage'] });
  const group = createBindGroup(device, 'bench_fma', pipeline, [out]);
  const step = async (dispatches: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline.pipeline);
    pass.setBindGroup(0, group);
    for (let i = 0; i < dispatches; i++) pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  const engine = {
    async *generate(_prompt: string | number[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk> {
      await step(prefillDispatches()); // the prefill makes the first token
      yield { text: '', ids: [0] };
      const perStep = options.speculative ? 2 : 1;
      for (let made = 1; made < options.maxTokens!; made += perStep) {
        await step(options.speculative ? 9 : 7);
        yield { text: '', ids: Array.from({ length: Math.min(perStep, options.maxTokens! - made) }, () => 0) };
      }
    },
  } as unknown as Engine;
  return { engine, device };
}

describe('measureStepCost', () => {
  it('counts the decode steps only: dispatches and steps per token, CPU and GPU time per step', async () => {
    const { engine, device } = await fakeEngine(() => 40);
    const plain = await measureStepCost(engine, { prompt: 'p', speculative: false, shortTokens: 3, longTokens: 9, device });
    expect(plain).toMatchObject({ dispatches_per_token: 7, steps_per_token: 1, dispatches_per_step: 7, steps_measured: 6 });
    expect(plain.cpu_record_submit_ms).toBeGreaterThan(0);
    expect(plain.gpu_ms_per_step).toBeGreaterThan(0);
    const mtp = await measureStepCost(engine, { prompt: 'p', speculative: true, shortTokens: 3, longTokens: 9 });
    expect(mtp).toMatchObject({ dispatches_per_token: 4.5, steps_per_token: 0.5, dispatches_per_step: 9, steps_measured: 3, gpu_ms_per_step: null });
  });

  it('refuses when the two runs do not repeat each other', async () => {
    let calls = 0;
    const { engine } = await fakeEngine(() => (++calls === 1 ? 40 : 41));
    await expect(measureStepCost(engine, { prompt: 'p', speculative: false, shortTokens: 3, longTokens: 9 })).rejects.toThrow(/did not repeat each other/);
  });
});
